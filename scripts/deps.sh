#!/usr/bin/env bash
# Installs what Tessera needs to build, test and benchmark, and nothing more.
# Idempotent: when everything is present it only checks, in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential cmake ninja-build pkg-config clang-14 libclang-rt-14-dev clang-format
      libssl-dev libsqlite3-dev sqlite3 libpq-dev postgresql libjansson-dev libsodium-dev
      libcrypt-dev libcurl4-openssl-dev libmicrohttpd-dev libcmocka-dev wrk nginx-light nginx curl
      valgrind)
# nginx (with auth_request): the benchmarks' ceiling and the front of tests/blackbox/test/authz-gateway.
# valgrind: make valgrind (scripts/valgrind.sh), the black-box suite under memcheck.
# Node.js (for the test clients) may come from elsewhere on the machine: take Debian's only if absent.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # nginx runs only as a child of the benchmarks and tests: never leave Debian's default site running.
    if command -v systemctl >/dev/null 2>&1; then $sudo_cmd systemctl disable --now nginx >/dev/null 2>&1 || true; fi
    pkill -x nginx 2>/dev/null || true
fi

# Test clients (auth-js, supabase-js, jose) come from npm, pinned by the lock file.
if [ -f tests/blackbox/package.json ]; then
    lock=tests/blackbox/package-lock.json
    stamp=tests/blackbox/node_modules/.deps-stamp
    if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
        (cd tests/blackbox && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
        touch "$stamp"
    fi
fi
