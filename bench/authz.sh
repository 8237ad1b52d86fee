#!/usr/bin/env bash
# bench/authz.sh - authorization's benchmarks (issue 6, /v1/authz), all in one run so that the
# ratios hold, at 64 connections, against nginx returning a fixed 200 on the same machine:
#   1. POST /v1/authz/check with an identity's tst_ token: "read collections/posts" with a
#      resource given in the context, under a role whose read rule is the predicate
#      `resource.data.owner == identity.id` (bench/authz_check.lua; every answer must be a 200
#      with "allowed":true)
#   2. GET /v1/authz/gateway (nginx auth_request) with X-Original-Method/-URI for
#      a. a route mapped to an api/blog action that the role allows with `true` (static path)
#      b. a route mapped to a collection document (collections/posts/{id}, read), allowed by
#         the owner predicate: the document is read from the store for every request
# Writes the section "## Authorization (/v1/authz)" of bench/RESULTS.md (replacing it;
# everything else in the file is kept) and the raw outputs under bench/out/authz/.
#
# Environment: BENCH_DURATION=10 (seconds per figure), BENCH_QUICK=1 (2 s per figure),
# TESSERA_BIN (default build/tessera).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/authz
TESSERA=${TESSERA_BIN:-$ROOT/build/tessera}
QUICK=${BENCH_QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DUR=2
else
    DUR=${BENCH_DURATION:-10}
fi
NPROC=$(nproc)
CONNS=64

[[ -x $TESSERA ]] || { echo "bench/authz.sh: no server binary at $TESSERA (make build)" >&2; exit 1; }
for t in wrk nginx curl python3; do
    command -v "$t" >/dev/null || { echo "bench/authz.sh: $t is missing (scripts/deps.sh)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/tessera-bench-authz.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
mkdir -p "$OUT"
log() { printf '[bench authz %4ds] %s\n' "$SECONDS" "$*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wrk summary -> "req_per_s p50_ms p99_ms mean_ms non2xx socket_errors(yes|no)"
wrk_figures() {
    python3 - "$1" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, u):
    v = float(v)
    return v / 1000 if u == 'us' else v * 1000 if u == 's' else v
rps = re.search(r'Requests/sec:\s+([\d.]+)', t)
p50 = re.search(r'50%\s+([\d.]+)(us|ms|s)', t)
p99 = re.search(r'99%\s+([\d.]+)(us|ms|s)', t)
mean = re.search(r'Latency\s+([\d.]+)(us|ms|s)', t)
errs = re.search(r'Non-2xx or 3xx responses: (\d+)', t)
sock = re.search(r'Socket errors: (.*)', t)
print(rps.group(1) if rps else 0, ms(*p50.groups()) if p50 else 0, ms(*p99.groups()) if p99 else 0,
      ms(*mean.groups()) if mean else 0, errs.group(1) if errs else 0, 'yes' if sock else 'no')
EOF
}

json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }

# ---- nginx ceiling (the same server as bench/v1.sh's) ----
NGINX_PORT=$(free_port)
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $NPROC;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path tmp_body; proxy_temp_path tmp_proxy; fastcgi_temp_path tmp_fastcgi;
    uwsgi_temp_path tmp_uwsgi; scgi_temp_path tmp_scgi;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$NGINX_PORT; location / { return 200 "ok"; } }
}
EOF
nginx -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" -e "$TMP/nginx/error.log" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$NGINX_PORT/" >/dev/null && break; sleep 0.05; done
log "nginx ceiling"
wrk -t2 -c$CONNS -d1s "http://127.0.0.1:$NGINX_PORT/" >/dev/null
wrk -t2 -c$CONNS -d"${DUR}s" --latency "http://127.0.0.1:$NGINX_PORT/" >"$OUT/nginx.txt"
read -r NGINX_RPS NGINX_P50 NGINX_P99 _ _ _ < <(wrk_figures "$OUT/nginx.txt")
kill "$NGINX_PID" 2>/dev/null || true
wait "$NGINX_PID" 2>/dev/null || true

# ---- the server: routes, a role with a static and a predicate rule, an identity ----
cat >"$TMP/routes.json" <<'EOF'
[
  {"route": "POST /blog/{id}/publish", "resource": "api/blog", "action": "publish"},
  {"route": "GET /posts/{id}", "resource": "collections/posts/{id}", "action": "read"}
]
EOF
PORT=$(free_port)
# Logins are not measured here: cheap hashing keeps the set-up short.
env -u TESSERA_BIN TESSERA_LISTEN="127.0.0.1:$PORT" TESSERA_DATABASE_URL="sqlite://$TMP/authz.db" \
    TESSERA_LOG_REQUESTS=false TESSERA_GATEWAY_ROUTES="$TMP/routes.json" \
    TESSERA_PASSWORD_HASH_MEMORY_KIB=64 TESSERA_PASSWORD_HASH_ITERATIONS=1 \
    TESSERA_RATE_LIMIT_PROFILE_DEFAULT=1000000 TESSERA_RATE_LIMIT_ACCOUNT=1000000000/1s,1000000 \
    "$TESSERA" serve >"$OUT/tessera.log" 2>&1 &
TPID=$!
PIDS+=("$TPID")
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 200); do
    curl -sf "$BASE/health" >/dev/null && break
    sleep 0.05
done
curl -sf "$BASE/health" >/dev/null || { echo "bench/authz.sh: the server did not start:" >&2; tail -20 "$OUT/tessera.log" >&2; exit 1; }
SERVICE=$(env -u TESSERA_BIN TESSERA_DATABASE_URL="sqlite://$TMP/authz.db" "$TESSERA" key show --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["service_role_key"])')

api() { # method path [body]
    curl -sf -X "$1" "$BASE$2" -H "Authorization: Bearer $SERVICE" \
        -H 'Content-Type: application/json' ${3:+-d "$3"}
}

OWNER_RULE='resource.data.owner == identity.id'
api POST /v1/collections '{"name":"people"}' >/dev/null
api POST /v1/collections '{"name":"posts"}' >/dev/null
api POST /v1/roles "{\"name\":\"blogger\",\"privileges\":[
    {\"resource\":\"collections/posts\",\"actions\":{\"read\":\"$OWNER_RULE\"}},
    {\"resource\":\"api/blog\",\"actions\":{\"publish\":true}}]}" >/dev/null
api POST /v1/profiles '{"name":"writer","policies":[{"role":"default"},{"role":"blogger"}]}' >/dev/null
api POST /v1/collections/people/documents \
    '{"id":"bench","data":{"profiles":["writer"]},"credentials":{"password":"bench password 1"}}' >/dev/null
api POST /v1/collections/posts/documents '{"id":"p-bench","data":{"owner":"bench","title":"t"}}' >/dev/null
TOKEN=$(curl -sf -X POST "$BASE/v1/login" -d '{"collection":"people","id":"bench","password":"bench password 1"}' |
    json_get "['token']['secret']")

# Each figure's request must be allowed, by the role expected, before it is measured.
CHECK_BODY='{"action":"read","resource":"collections/posts","context":{"resource":{"data":{"owner":"bench"}}}}'
ANSWER=$(curl -sf -X POST "$BASE/v1/authz/check" -H "Authorization: Bearer $TOKEN" -d "$CHECK_BODY")
[[ $(json_get "['allowed']" <<<"$ANSWER") == True ]] ||
    { echo "bench/authz.sh: the check is not allowed: $ANSWER" >&2; exit 1; }
gateway_role() { # method uri
    curl -s -o /dev/null -D - "$BASE/v1/authz/gateway" -H "Authorization: Bearer $TOKEN" \
        -H "X-Original-Method: $1" -H "X-Original-URI: $2" |
        python3 -c 'import sys
lines = sys.stdin.read().splitlines()
status = lines[0].split()[1] if lines else "none"
role = [l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("x-tessera-role:")]
print(status, role[0] if role else "-")'
}
for r in "POST /blog/42/publish" "GET /posts/p-bench"; do
    got=$(gateway_role $r)
    [[ $got == "200 blogger" ]] || { echo "bench/authz.sh: gateway $r answered '$got', not '200 blogger'" >&2; exit 1; }
done
[[ $(gateway_role GET /posts/p-other) == 403* ]] ||
    { echo "bench/authz.sh: gateway allowed a post the identity does not own" >&2; exit 1; }

# ---- 1. POST /v1/authz/check ----
log "POST /v1/authz/check (owner predicate)"
export BENCH_IDENTITY=bench
wrk -t2 -c$CONNS -d1s -s "$BENCH/authz_check.lua" -H "Authorization: Bearer $TOKEN" "$BASE/v1/authz/check" >/dev/null
wrk -t2 -c$CONNS -d"${DUR}s" --latency -s "$BENCH/authz_check.lua" -H "Authorization: Bearer $TOKEN" \
    "$BASE/v1/authz/check" >"$OUT/check.txt"
read -r CK_RPS CK_P50 CK_P99 _ CK_ERR CK_SOCK < <(wrk_figures "$OUT/check.txt")
# the same requests again for 1 s, each answer checked (not timed: the counting costs wrk CPU)
BENCH_COUNT=1 wrk -t2 -c$CONNS -d1s -s "$BENCH/authz_check.lua" -H "Authorization: Bearer $TOKEN" \
    "$BASE/v1/authz/check" >"$OUT/check-verify.txt"
CK_OTHER=$(sed -n 's/.*check_other=\([0-9]*\).*/\1/p' "$OUT/check-verify.txt")

# ---- 2. GET /v1/authz/gateway ----
gateway_bench() { # name method uri
    wrk -t2 -c$CONNS -d1s -H "Authorization: Bearer $TOKEN" -H "X-Original-Method: $2" \
        -H "X-Original-URI: $3" "$BASE/v1/authz/gateway" >/dev/null
    wrk -t2 -c$CONNS -d"${DUR}s" --latency -H "Authorization: Bearer $TOKEN" -H "X-Original-Method: $2" \
        -H "X-Original-URI: $3" "$BASE/v1/authz/gateway" >"$OUT/$1.txt"
}
log "GET /v1/authz/gateway, api/blog publish (true)"
gateway_bench gateway-static POST /blog/42/publish
read -r GS_RPS GS_P50 GS_P99 _ GS_ERR GS_SOCK < <(wrk_figures "$OUT/gateway-static.txt")
log "GET /v1/authz/gateway, collections/posts/{id} read (owner predicate)"
gateway_bench gateway-doc GET /posts/p-bench
read -r GD_RPS GD_P50 GD_P99 _ GD_ERR GD_SOCK < <(wrk_figures "$OUT/gateway-doc.txt")
kill "$TPID" 2>/dev/null || true
wait "$TPID" 2>/dev/null || true

# ---- 3. in-process evaluation (bench/authz_eval.c): rate per core and heap allocations ----
EVAL=${BENCH_AUTHZ_EVAL:-$(dirname "$TESSERA")/bench_authz}
if [[ ! -x $EVAL ]]; then
    cmake --build "$(dirname "$TESSERA")" --target bench_authz >/dev/null 2>&1 || true
fi
EV_RATE=0
EV_MALLOCS=?
if [[ -x $EVAL ]]; then
    log "in-process evaluations (bench_authz)"
    "$EVAL" "$DUR" >"$OUT/eval.txt"
    # pred=1: resource.data.owner == identity.id && claims.aal == "aal2"
    EV_RATE=$(sed -n 's/^AUTHZ pred=1 .* rate=\([0-9]*\).*/\1/p' "$OUT/eval.txt")
    EV_MALLOCS=$(sed -n 's/^AUTHZ pred=1 .* mallocs=\([0-9]*\).*/\1/p' "$OUT/eval.txt")
fi

# ---- report ----
SECTION=$(python3 - <<EOF
ng = float("$NGINX_RPS")
def f(x): return f"{x:,.0f}"
def row(name, rps, p50, p99, errs, sock):
    rps, p50, p99 = float(rps), float(p50), float(p99)
    return (f"| {name} | {f(rps)} | **{100*rps/ng:.1f} %** | {p50:.2f} ms | **{p99:.2f} ms** | "
            f"{errs}{' (socket errors)' if sock == 'yes' else ''} | ≥ 70 % of nginx, p99 < 1 ms |")
print(f"""## Authorization (/v1/authz)

Measured by \`bash bench/authz.sh\` on $(date -u +%Y-%m-%d), $NPROC cores, SQLite, wrk -t2 on the
same cores, {$CONNS} connections ({"quick run, " if "$QUICK" == "1" else ""}{$DUR} s per figure, after 1 s of warm-up).
The caller is an identity with a \`tst_\` token whose profile gives the role \`blogger\`: read on
collections/posts by \`$OWNER_RULE\`, and api/blog publish by \`true\`.
Every measured request is allowed (checked before each figure; the check's answers are counted
by bench/authz_check.lua in a 1 s run after the timed one, since a Lua callback per answer
would take wrk CPU from the server). Raw outputs: bench/out/authz/.

| Figure | req/s | % of nginx | p50 | p99 | non-2xx | Target |
|---|---|---|---|---|---|---|
| nginx, fixed 200 (the ceiling) | {f(ng)} | 100 % | {float("$NGINX_P50"):.2f} ms | {float("$NGINX_P99"):.2f} ms | – | – |
{row("POST /v1/authz/check, read collections/posts, owner predicate on the context's resource", "$CK_RPS", "$CK_P50", "$CK_P99", "$CK_ERR" + (" + ${CK_OTHER:-?} not allowed" if "${CK_OTHER:-?}" != "0" else ""), "$CK_SOCK")}
{row("GET /v1/authz/gateway, POST /blog/{id}/publish → api/blog publish (\`true\`: static)", "$GS_RPS", "$GS_P50", "$GS_P99", "$GS_ERR", "$GS_SOCK")}
{row("GET /v1/authz/gateway, GET /posts/{id} → collections/posts/{id} read (owner predicate, document read)", "$GD_RPS", "$GD_P50", "$GD_P99", "$GD_ERR", "$GD_SOCK")}

In-process (bench/authz_eval.c, one thread): \`resource.data.owner == identity.id && claims.aal == "aal2"\`
evaluated {f(float("${EV_RATE:-0}"))} times per second (target ≥ 1,000,000 per core), with ${EV_MALLOCS:-?} heap
allocations counted over all evaluations (target 0).

The targets are the issue's, recorded here, not asserted by the script.
""")
EOF
)
python3 - "$BENCH/RESULTS.md" "$SECTION" <<'EOF'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Benchmark results\n"
m = re.search(r'\n## Authorization \(/v1/authz\)\n[\s\S]*?(?=\n## |\Z)', text)
if m:
    text = text[:m.start()] + "\n" + section + text[m.end():]
else:
    # after the native API's section when there is one, else before Durability, else at the end
    m = re.search(r'\n## Native API \(/v1\)\n[\s\S]*?(?=\n## |\Z)', text)
    if m:
        text = text[:m.end()] + "\n" + section + text[m.end():]
    else:
        m = re.search(r'\n## Durability\n', text)
        text = (text[:m.start()] + "\n" + section + text[m.start():]) if m else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
EOF
echo "$SECTION"
