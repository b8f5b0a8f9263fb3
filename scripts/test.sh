#!/usr/bin/env bash
# Pointflow's one test command (CI runs it through .ci/run).
#
# On a fresh machine it installs what it needs (pinned), starts the moto AWS
# emulator on a free loopback port, points the AWS SDK at it, runs format and
# lint checks, every test, the API fuzzer (Schemathesis against
# `pointflow local serve`, scripts/api-fuzz.sh) and cfn-lint on
# template.yaml, and stops what it started on exit, whatever happens.
# Debian's chromium and chromium-driver are installed if missing and
# chromedriver runs for the browser test (scripts/browser.sh).
set -euo pipefail

MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.58.0"
SCHEMATHESIS_VERSION="4.32.5"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"

step() { printf '\n==> %s\n' "$*"; }

step "Python tools (moto[server]==$MOTO_VERSION, cfn-lint==$CFN_LINT_VERSION, schemathesis==$SCHEMATHESIS_VERSION) in .venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" - "$MOTO_VERSION" "$CFN_LINT_VERSION" "$SCHEMATHESIS_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
assert version("moto") == sys.argv[1] and version("cfn-lint") == sys.argv[2]
assert version("schemathesis") == sys.argv[3]
import flask, flask_cors  # moto[server] extras
PY
then
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"
fi
# The venv's python is a symlink to the interpreter itself (not a pyenv
# shim), so the PID we hold is the server's own and TERM/KILL reach it.
python_bin="$venv/bin/python"

step "Starting moto on a free loopback port"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$root/target/moto.log"
mkdir -p "$root/target"
"$python_bin" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!

stop_moto() {
  if kill -0 "$moto_pid" 2>/dev/null; then
    kill -TERM "$moto_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$moto_pid" 2>/dev/null || true
  fi
  wait "$moto_pid" 2>/dev/null || true
}
# browser_stop is defined once scripts/browser.sh is sourced (below).
stop_all() {
  if declare -F browser_stop >/dev/null; then
    browser_stop
  fi
  stop_moto
}
trap stop_all EXIT INT TERM

for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
    ready=1
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "moto exited during start-up:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.2
done
if [ "${ready:-0}" != 1 ]; then
  echo "moto did not become ready on port $port within 20 s" >&2
  cat "$log" >&2
  exit 1
fi
echo "moto ${MOTO_VERSION} ready at http://127.0.0.1:$port (pid $moto_pid)"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID="testing" AWS_SECRET_ACCESS_KEY="testing" AWS_SESSION_TOKEN="testing"
export AWS_REGION="us-east-1" AWS_DEFAULT_REGION="us-east-1"
export AWS_EC2_METADATA_DISABLED=true
# Emulator-backed tests fail instead of skipping when this is set.
export POINTFLOW_REQUIRE_EMULATOR=1

step "Headless Chromium for the browser test (Debian's chromium and chromium-driver)"
# shellcheck source=scripts/browser.sh
source "$root/scripts/browser.sh"
browser_install
# Exports POINTFLOW_WEBDRIVER_URL and POINTFLOW_REQUIRE_BROWSER=1: the
# browser test fails instead of skipping.
browser_start

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, property, contract and emulator tests)"
test_log="$root/target/test-output.log"
cargo test --workspace --locked 2>&1 | tee "$test_log"

step "API fuzzing: Schemathesis from docs/openapi.yaml against pointflow local serve"
bash "$root/scripts/api-fuzz.sh" "$venv"

step "cfn-lint template.yaml"
"$venv/bin/cfn-lint" template.yaml

step "All checks passed"
# One closing line for the whole run (cargo's last line is a crate's doc tests).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$test_log"
