#!/usr/bin/env bash
# Long fuzzing runs, by hand (CI only replays the corpus: see docs/fuzzing.md).
#
#   scripts/fuzz.sh TARGET [SECONDS]      # TARGET: api_body, csv_import, csv_utf16_import, message_decode, ndjson_import, xlsx_import
#   scripts/fuzz.sh TARGET cmin           # shrink everything found into the committed corpus
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --version 0.13.1 --locked`). On a
# stable toolchain RUSTC_BOOTSTRAP=1 lets it use the nightly flags it needs.
# New inputs go to fuzz/corpus-full/TARGET (not committed); crashes to
# fuzz/artifacts/TARGET.
set -euo pipefail

target="${1:?usage: scripts/fuzz.sh api_body|csv_import|csv_utf16_import|message_decode|ndjson_import|xlsx_import [SECONDS|cmin]}"
# A workbook is a zip archive of several parts: its smallest is about 5 KiB.
cmin_len=1024
if [ "$target" = xlsx_import ]; then cmin_len=16384; fi
what="${2:-600}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"

if [ "$what" = cmin ]; then
  # Everything seen so far, reduced to a small set of inputs up to 1 KiB
  # covering the same edges (set cover), into the committed corpus.
  mkdir -p "corpus-full/$target"
  cp -n "corpus/$target"/* "corpus-full/$target"/ 2>/dev/null || true
  rm -rf "corpus/$target" && mkdir -p "corpus/$target"
  cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus/$target" "corpus-full/$target" -- \
    -set_cover_merge=1 -use_counters=0 -max_len="$cmin_len" -rss_limit_mb=1024 -malloc_limit_mb=64
  exit 0
fi

mkdir -p "corpus-full/$target"
# One process (the machine is shared); -rss_limit_mb and -malloc_limit_mb turn
# a runaway allocation into a crash report; inputs up to 64 KiB.
cargo fuzz run --sanitizer "$sanitizer" "$target" "corpus-full/$target" "corpus/$target" -- \
  -max_total_time="$what" -max_len=65536 -timeout=10 \
  -rss_limit_mb=1024 -malloc_limit_mb=64 -print_final_stats=1
