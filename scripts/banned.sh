#!/usr/bin/env bash
# Rejects calls that are easy to misuse (curl's checksrc idea): unbounded string
# copies, atoi, strtok, rand, and memcmp anywhere a secret might be compared (use
# CRYPTO_memcmp or sodium_memcmp).
set -euo pipefail
cd "$(dirname "$0")/.."
pattern='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|strtok|rand|srand|random|memcmp)\('
hits=$(grep -rnE "$pattern" src --include='*.c' --include='*.h' | grep -v 'banned-ok' || true)
if [ -n "$hits" ]; then
    echo "banned.sh: forbidden calls (see scripts/banned.sh):"
    echo "$hits"
    exit 1
fi
