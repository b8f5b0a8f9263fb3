#!/usr/bin/env bash
# Fuzzes the HTTP API from its OpenAPI document: Schemathesis generates
# requests from docs/openapi.yaml (valid and invalid ones, its examples, and
# chains along the document's links) against `pointflow local serve` on a
# free loopback port with a fresh temporary database, and fails on a server
# error, a status, content type, header or body the document does not
# allow for the route, or invalid data the API accepts.
#
# scripts/test.sh runs it (after installing Schemathesis in .venv); on its
# own: bash scripts/api-fuzz.sh [.venv] (needs schemathesis in that venv).
# POINTFLOW_FUZZ_EXAMPLES (default 40) bounds the examples per operation and
# phase; POINTFLOW_FUZZ_SEED replays a run (each run prints its seed).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${1:-$root/.venv}"
examples="${POINTFLOW_FUZZ_EXAMPLES:-40}"
out="$root/target/api-fuzz"

cargo build --quiet --locked -p pointflow-cli --bin pointflow
mkdir -p "$out"
work="$(mktemp -d)"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
"$root/target/debug/pointflow" local --db "$work/local.db" --bucket-dir "$work/bucket" \
  serve --addr "127.0.0.1:$port" >"$out/serve.log" 2>&1 &
server_pid=$!

stop_server() {
  if kill -0 "$server_pid" 2>/dev/null; then
    # Ctrl-C is the server's clean stop; KILL if it does not go.
    kill -INT "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop_server EXIT INT TERM

for _ in $(seq 1 100); do
  # Any answer of the API (an unknown job is its 404) means it is up.
  if "$venv/bin/python" -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$port/v1/jobs/up', timeout=1)
except urllib.error.HTTPError:
    pass
" 2>/dev/null; then
    ready=1
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "pointflow local serve exited during start-up:" >&2
    cat "$out/serve.log" >&2
    exit 1
  fi
  sleep 0.2
done
if [ "${ready:-0}" != 1 ]; then
  echo "pointflow local serve did not answer on port $port within 20 s" >&2
  cat "$out/serve.log" >&2
  exit 1
fi

seed=()
if [ -n "${POINTFLOW_FUZZ_SEED:-}" ]; then
  seed=(--seed "$POINTFLOW_FUZZ_SEED")
fi
# The local server takes no API key (only API Gateway checks it), so no
# check or generated case is about the key: `ignored_auth` and the
# security parameters are left out. `positive_data_acceptance` is left out
# because valid-looking data is refused by rules a schema cannot say (an
# accrual without accrual_id needs an Idempotency-Key, a cursor must be
# one the API gave, a use needs points to take).
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
checks+=,response_headers_conformance,negative_data_rejection,missing_required_header
checks+=,unsupported_method,allow_header_conformance
# Its warning that a base path may be missing is left out: ids it makes up
# are unknown, and 404 is the documented answer.
warnings=missing_test_data,validation_mismatch,unsupported_regex,unresolvable_reference,method_not_allowed
warnings+=,low_valid_rate,dictionary_mismatch,missing_deserializer
# Run from $out so Schemathesis's and Hypothesis's caches stay in target/.
(
  cd "$out"
  "$venv/bin/schemathesis" run "$root/docs/openapi.yaml" \
    --url "http://127.0.0.1:$port" \
    --checks "$checks" \
    --warnings "$warnings" \
    --generation-with-security-parameters false \
    --generation-database none \
    --max-examples "$examples" \
    --workers 1 \
    --request-timeout 30 \
    --no-color \
    --report junit --report-dir "$out" \
    "${seed[@]}"
)
