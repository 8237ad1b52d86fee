#!/usr/bin/env bash
# Enforces docs/ARCHITECTURE.md's rule of who may include whom: for each module, the
# other modules' headers its files may include, and which third-party headers are
# confined to one file.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A allowed=(
    [core]=""
    [jose]="core"
    [jwks]="core jose"
    [store]="core"
    [authn]="core jose store"
    [http]="core"
    [authz]="core"
    [limit]="core store"
    [api]="core jose store authn http jwks authz limit"
    [cli]="core jose store authn http jwks authz limit api"
)
bad=0
for dir in src/*/; do
    m=$(basename "$dir")
    for f in "$dir"*.[ch]; do
        while IFS= read -r inc; do
            other=${inc%%/*}
            [ "$other" = "$inc" ] && continue            # same-module include ("x.h")
            [ "$other" = "$m" ] && continue
            if [[ " ${allowed[$m]} " != *" $other "* ]]; then
                echo "check-includes: $f includes $inc, but $m may not use $other"
                bad=1
            fi
        done < <(grep -oE '^#include "[^"]+"' "$f" | sed -E 's/#include "(.*)"/\1/')
    done
done
# Engine headers stay inside their backend file (STYLE.md: only store_sqlite.c knows SQLite).
check_confined() { # header allowed-file-regex
    local hits
    hits=$(grep -rlE "^#include <$1>" src | grep -vE "$2" || true)
    if [ -n "$hits" ]; then echo "check-includes: <$1> outside $2: $hits"; bad=1; fi
}
check_confined sqlite3.h 'src/store/store_sqlite\.c$'
check_confined libpq-fe.h 'src/store/store_pg(_import)?\.c$'
check_confined microhttpd.h 'src/http/'
check_confined curl/curl.h 'src/jwks/'
check_confined sodium.h 'src/authn/|src/cli/cli_admin\.c$'
check_confined 'openssl/[a-z_]+\.h' 'src/jose/|src/authn/'
exit $bad
