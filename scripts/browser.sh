#!/usr/bin/env bash
# Headless Chromium for the browser test (tests/tests/browser/): installs
# Debian's `chromium` and `chromium-driver` when missing, starts
# `chromedriver` on a free loopback port (ready once GET /status says so),
# and stops it on exit.
#
# Sourced by scripts/test.sh, which calls browser_install, browser_start and,
# from its exit trap, browser_stop. On its own it runs one command with the
# driver up, e.g.:
#   bash scripts/browser.sh cargo test -p pointflow-tests --test browser
#
# No version pin: Debian's security archive carries only the newest
# chromium build of a release (each security update replaces the one
# before, so `chromium=<version>` stops resolving within weeks), and
# chromium-driver must be exactly chromium's version. Installing both in one
# apt-get call keeps them matched; the versions installed are printed.
#
# Exports POINTFLOW_WEBDRIVER_URL (the driver's URL) and
# POINTFLOW_REQUIRE_BROWSER=1 (the test fails instead of skipping when it
# cannot reach the driver).

browser_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chromedriver_pid=""

# Installs chromium and chromium-driver unless both commands are there. As
# root (CI, containers) it calls apt-get directly, else through sudo.
browser_install() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
      sudo=(sudo)
    fi
    local packages=(chromium chromium-driver)
    # apt-get update only when the package lists cannot serve the install
    # (a fresh image ships without lists).
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "${packages[@]}"; then
      "${sudo[@]}" apt-get update
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${packages[@]}"
    fi
  fi
  # Debian's chromium wrapper script prints a harmless shell warning on
  # some machines; keep the version line only.
  echo "$(chromium --version 2>/dev/null | grep -i chromium) / $(chromedriver --version | cut -d' ' -f1-2)"
  dpkg-query -W chromium chromium-driver 2>/dev/null || true
}

# Starts chromedriver on a free loopback port and waits until it is ready.
browser_start() {
  local port log ready=0
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  mkdir -p "$browser_root/target"
  log="$browser_root/target/chromedriver.log"
  # In a session (and process group) of its own, whose id is the driver's
  # PID: a browser left open by a test that died mid-way is a child of the
  # driver and outlives its TERM, so browser_stop signals the whole group.
  # Local connections only (chromedriver's default).
  setsid chromedriver --port="$port" --log-path="$log" >/dev/null 2>&1 &
  chromedriver_pid=$!
  for _ in $(seq 1 100); do
    if python3 - "$port" <<'PY' 2>/dev/null; then
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=1) as answer:
    assert json.load(answer)["value"]["ready"] is True
PY
      ready=1
      break
    fi
    if ! kill -0 "$chromedriver_pid" 2>/dev/null; then
      echo "chromedriver exited during start-up:" >&2
      cat "$log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  if [ "$ready" != 1 ]; then
    echo "chromedriver did not become ready on port $port within 20 s" >&2
    cat "$log" >&2 || true
    return 1
  fi
  export POINTFLOW_WEBDRIVER_URL="http://127.0.0.1:$port"
  export POINTFLOW_REQUIRE_BROWSER=1
  echo "chromedriver ready at $POINTFLOW_WEBDRIVER_URL (pid $chromedriver_pid, log $log)"
}

# Stops the driver and any browser it left open (TERM, then KILL, to the
# driver's process group).
browser_stop() {
  if [ -n "$chromedriver_pid" ] && kill -0 -- "-$chromedriver_pid" 2>/dev/null; then
    kill -TERM -- "-$chromedriver_pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 -- "-$chromedriver_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$chromedriver_pid" 2>/dev/null || true
  fi
  if [ -n "$chromedriver_pid" ]; then
    wait "$chromedriver_pid" 2>/dev/null || true
  fi
  chromedriver_pid=""
}

# Run directly: install, start, run the given command, stop.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  trap browser_stop EXIT INT TERM
  browser_install
  browser_start
  if [ "$#" -gt 0 ]; then
    "$@"
  fi
fi
