// report.mjs - turns bench/out/ (results.tsv, meta.env and the raw wrk outputs) into
// bench/RESULTS.md. Run by bench/run.sh; can be rerun by hand on a kept bench/out/:
//   node bench/report.mjs bench/out bench/RESULTS.md
// Every figure is the median of the runs (each metric separately); error counts are totals.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const [outDir, resultsPath] = process.argv.slice(2);
const benchDir = dirname(outDir);

// ---- inputs ----

const meta = Object.fromEntries(
  readFileSync(join(outDir, 'meta.env'), 'utf8').split('\n').filter(Boolean).map((l) => {
    const i = l.indexOf('=');
    return [l.slice(0, i), l.slice(i + 1)];
  }));
const clk = +meta.clk_tck || 100;
const quick = meta.quick === '1';

const UNIT = { us: 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
const toMs = (v, u) => +v * UNIT[u];

function parseWrk(text) {
  const r = { bench: {} };
  let m = text.match(/(\d+) requests in ([\d.]+)(us|ms|s|m|h)/);
  if (m) { r.requests = +m[1]; r.seconds = toMs(m[2], m[3]) / 1000; }
  m = text.match(/Requests\/sec:\s+([\d.]+)/);
  if (m) r.rps = +m[1];
  for (const [k, p] of [['p50', '50'], ['p99', '99']]) {
    m = text.match(new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m|h)`, 'm'));
    if (m) r[k] = toMs(m[1], m[2]);
  }
  m = text.match(/Non-2xx or 3xx responses: (\d+)/);
  r.non2xx = m ? +m[1] : 0;
  m = text.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  r.sock = m ? { connect: +m[1], read: +m[2], write: +m[3], timeout: +m[4] } : { connect: 0, read: 0, write: 0, timeout: 0 };
  r.sockTotal = r.sock.connect + r.sock.read + r.sock.write + r.sock.timeout;
  for (const line of text.split('\n')) {
    const b = line.match(/^(BENCH|ARGON2) (.*)$/);
    if (b) for (const kv of b[2].trim().split(/\s+/)) {
      const [k, v] = kv.split('=');
      r.bench[k] = isNaN(+v) ? v : +v;
    }
  }
  return r;
}

const rows = readFileSync(join(outDir, 'results.tsv'), 'utf8').split('\n').filter(Boolean).map((l) => {
  const [group, id, label, conns, run, cpu, rss, outfile, extras] = l.split('\t');
  const ex = {};
  for (const kv of (extras || '').split(',').filter(Boolean)) {
    const [k, v] = kv.split('=');
    ex[k] = isNaN(+v) ? v : +v;
  }
  const row = { group, id, label, conns: +conns, run: +run, cpuTicks: cpu === '' ? null : +cpu,
    rssKb: rss === '' ? null : +rss, outfile, ex };
  if (outfile) {
    const path = join(benchDir, outfile);
    row.w = existsSync(path) ? parseWrk(readFileSync(path, 'utf8')) : { bench: {}, missing: true };
  }
  return row;
});

// Cold runs: wrk's own clock runs until run.sh interrupts it; the Lua script's is exact.
for (const r of rows) {
  if (r.w && r.w.bench.cold_requests !== undefined) {
    r.w.requests = r.w.bench.cold_requests;
    r.w.rps = r.w.bench.cold_rps;
    r.w.non2xx = r.w.bench.cold_non200;
  }
}
// Concurrent runs share the server CPU between the two wrk runs of the same round.
for (const r of rows.filter((x) => x.ex.cpu_shared)) {
  const all = rows.filter((x) => x.ex.cpu_shared && x.run === r.run);
  r.sharedRequests = all.reduce((s, x) => s + (x.w?.requests || 0), 0);
}
for (const r of rows) {
  if (r.cpuTicks !== null && r.w?.requests) {
    const n = r.sharedRequests || r.w.requests;
    r.cpuUs = (r.cpuTicks * 1e6) / clk / n;
  }
}

// ---- helpers ----

const median = (xs) => {
  const v = xs.filter((x) => x !== undefined && x !== null && !Number.isNaN(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const h = v.length >> 1;
  return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
};
const sum = (xs) => xs.reduce((s, x) => s + (x || 0), 0);
const byId = (id) => rows.filter((r) => r.id === id);

function agg(id) {
  const rs = byId(id);
  if (!rs.length) return null;
  return {
    id, runs: rs, label: rs[0].label, conns: rs[0].conns,
    rps: median(rs.map((r) => r.w?.rps)),
    p50: median(rs.map((r) => r.w?.p50)),
    p99: median(rs.map((r) => r.w?.p99)),
    p99max: Math.max(...rs.map((r) => r.w?.p99 ?? 0)),
    cpuUs: median(rs.map((r) => r.cpuUs)),
    rssKb: median(rs.map((r) => r.rssKb)),
    requests: sum(rs.map((r) => r.w?.requests)),
    non2xx: sum(rs.map((r) => r.w?.non2xx)),
    sock: sum(rs.map((r) => r.w?.sockTotal)),
    sockDetail: ['connect', 'read', 'write', 'timeout']
      .map((k) => [k, sum(rs.map((r) => r.w?.sock?.[k]))]).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(', '),
    rpsRuns: rs.map((r) => r.w?.rps),
    minRps: Math.min(...rs.map((r) => r.w?.rps ?? 0)),
    ex: (k) => median(rs.map((r) => r.ex[k])),
    exSum: (k) => sum(rs.map((r) => r.ex[k])),
    b: (k) => median(rs.map((r) => r.w?.bench?.[k])),
    bSum: (k) => sum(rs.map((r) => r.w?.bench?.[k])),
  };
}

const nf = (x, d = 0) => (x === undefined || x === null || Number.isNaN(x) ? 'n/a'
  : x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const ms = (x) => (x === undefined ? 'n/a' : x >= 1000 ? `${nf(x / 1000, 2)} s` : x >= 100 ? `${nf(x, 0)} ms`
  : x >= 10 ? `${nf(x, 1)} ms` : `${nf(x, 2)} ms`);
const mb = (kb) => (kb === undefined || kb === null ? 'n/a' : `${nf((kb * 1024) / 1e6, 1)} MB`);
const us = (x) => (x === undefined ? 'n/a' : x >= 1000 ? `${nf(x / 1000, 2)} ms` : `${nf(x, 1)} µs`);
const pct = (x) => (x === undefined || Number.isNaN(x) ? 'n/a' : `${nf(x * 100, 1)} %`);
const runsList = (xs) => xs.map((x) => nf(x)).join(' / ');
const status = (ok) => (ok === undefined ? 'n/a' : ok ? 'met' : '**not met**');
const errs = (a) => `${nf(a.non2xx)} / ${nf(a.sock)}${a.sockDetail ? ` (${a.sockDetail})` : ''}`;

// ---- figures ----

const nginx = agg(`nginx-c${meta.base_conns}`);
const pollConns = (meta.poll_conns || '').split(/\s+/).filter(Boolean);
const epollConns = (meta.epoll_conns || '').split(/\s+/).filter(Boolean);
const poll = Object.fromEntries(pollConns.map((c) => [c, agg(`poll-single-c${c}`)]));
const epoll = Object.fromEntries(epollConns.map((c) => [c, agg(`epoll-single-c${c}`)]));
const base = meta.base_conns;
const single = poll[base];
const warm = agg(`pool-warm-c${base}`);
const cold = agg(`pool-cold-c${base}`);
const logreq = agg(`logreq-single-c${base}`);
const nolog = agg(`nolog-single-c${base}`);
const raw = agg('raw-argon2');
const login = agg(`login-c${meta.login_conns}`);
const concUser = agg(`conc-user-c${base}`);
const concLogin = agg(`conc-login-c${meta.login_conns}`);
const refresh = agg(`refresh-c${meta.refresh_conns}`);
const starts = rows.filter((r) => r.group === 'start');

const rawRate = raw ? raw.b('rate') : undefined;
const loginRatio = login && rawRate ? login.rps / rawRate : undefined;
const idleMedian = median(starts.map((r) => r.ex.idle_rss_kb));
const idleMax = Math.max(...starts.map((r) => r.ex.idle_rss_kb));
const startMedian = median(starts.map((r) => r.ex.startup_ms));
const IDLE_LIMIT_KB = 15e6 / 1024; // 15 MB, MB = 10^6 bytes
const refreshErrors = refresh ? refresh.non2xx + refresh.bSum('refresh_starved') + refresh.bSum('refresh_unparsed') : undefined;

const stalls = [];
for (const c of epollConns) {
  const e = epoll[c], p = poll[c];
  if (!e) continue;
  for (const r of e.runs) {
    const ref = p ? p.rps : single?.rps;
    if (r.w?.rps !== undefined && ref && r.w.rps < 0.25 * ref) stalls.push(`${c} connections, run ${r.run}: ${nf(r.w.rps)} req/s`);
  }
}

// ---- document ----

const L = [];
const P = (...xs) => L.push(...xs);
const table = (head, body, align) => { // align: one letter per column, l or r (default l r r r...)
  const a = (i) => (align ? align[i] === 'r' : i > 0);
  P(`| ${head.join(' | ')} |`, `|${head.map((h, i) => (a(i) ? ' ---: ' : ' --- ')).join('|')}|`);
  for (const r of body) P(`| ${r.join(' | ')} |`);
  P('');
};

P('# Tessera benchmark results', '');
if (quick) {
  P('> **QUICK MODE (BENCH_QUICK=1): one 2-second run per figure.** A smoke test of the harness;',
    '> the figures are noisy and not to be quoted. Run `make bench` on a quiet machine for real figures.', '');
}
P(`Generated by \`bench/run.sh\` on ${meta.date}, in ${meta.total_seconds} s.`, '');
P('| Machine and software | |', '| --- | --- |',
  `| CPU | ${meta.host_cpu}, nproc = ${meta.host_nproc} |`,
  `| Memory, kernel | ${meta.host_mem}, ${meta.host_kernel} |`,
  `| Load average (1/5/15 min) at start / end | ${meta.loadavg_start} / ${meta.loadavg_end} |`,
  `| Tessera | ${meta.tessera_version}, commit ${meta.git_commit}, ${meta.tessera_binary}; ${meta.server_banner || ''} |`,
  `| libmicrohttpd, libsodium | ${meta.libmicrohttpd}, ${meta.libsodium_version} |`,
  `| wrk, nginx, node, gcc | ${meta.wrk_version}; nginx ${meta.nginx_version}; node ${meta.node_version}; ${meta.gcc_version} |`,
  '');
P('Client and server share the machine: wrk\'s threads run on the same cores as the server, as',
  'they do for the nginx ceiling, so every figure (ceiling included) is "this machine, loopback,',
  'wrk included", and ratios between figures are more telling than the absolute numbers.', '');

P('## Targets', '');
table(['What', 'Figure (median)', 'Target', 'Status'], [
  ['Idle RSS right after start', `${mb(idleMedian)} (max ${mb(idleMax)}, ${starts.length} starts)`, '< 15 MB', status(idleMax < IDLE_LIMIT_KB)],
  ['Password grant vs raw argon2id', login && raw ? `${pct(loginRatio)} (${nf(login.rps, 1)} vs ${nf(rawRate, 1)} per s)` : 'n/a', '≥ 90 %', status(loginRatio === undefined ? undefined : loginRatio >= 0.9)],
  ['GET /user p99 while logins saturate the pool', concUser ? `${ms(concUser.p99)} (worst run ${ms(concUser.p99max)})` : 'n/a', '< 5 ms', status(concUser ? concUser.p99 < 5 : undefined)],
  ['Refresh grant', refresh ? `${nf(refresh.rps)} /s, ${nf(refreshErrors)} non-2xx` : 'n/a', '≥ 3,000 /s, 0 non-2xx', status(refresh ? refresh.rps >= 3000 && refreshErrors === 0 : undefined)],
  ['Start-up time (exec to first /health answer)', `${ms(startMedian)}`, '(none set)', '—'],
  [`GET /user, one token, ${base} conn., poll`, single ? `${nf(single.rps)} req/s = ${pct(single.rps / nginx?.rps)} of nginx` : 'n/a', '≥ 50 % of nginx', status(single && nginx ? single.rps / nginx.rps >= 0.5 : undefined)],
  [`GET /user p99, one token, ${base} conn., poll`, single ? `${ms(single.p99)} (nginx in the same run: ${nginx ? ms(nginx.p99) : 'n/a'})` : 'n/a', '< 2 ms', status(single ? single.p99 < 2 : undefined)],
  ['epoll stall (libmicrohttpd 0.9.75)', stalls.length ? `seen in ${stalls.length} run(s)` : 'not seen in these runs', '(poll is the default)', '—'],
], 'llll');
P('"Status" compares the median with the target (idle RSS: the largest of all starts). MB = 10^6 bytes.', '');

P('## Settings', '');
P(`- Runs: ${meta.runs} per figure, ${meta.duration} s each, figure = median of the runs (each column`,
  `  separately); error counts are totals over the runs. wrk \`-t${meta.wrk_threads} --latency --timeout ${meta.wrk_timeout}\``,
  '  (a latency above the timeout would be counted as a timeout, not in the percentiles).',
  `- Server: \`build/tessera serve\` on 127.0.0.1, fresh SQLite database in a temporary directory,`,
  '  `TESSERA_MAILER_AUTOCONFIRM=true TESSERA_LOG_REQUESTS=false TESSERA_HTTP_EVENT_LOOP=poll`,',
  `  \`TESSERA_PASSWORD_HASH_WORKERS=${meta.hash_workers} TESSERA_PASSWORD_HASH_MEMORY_KIB=${meta.hash_mem_kib} TESSERA_PASSWORD_HASH_ITERATIONS=${meta.hash_iter}\`,`,
  `  JWT ${meta.jwt_alg}${meta.jwt_alg === 'ES256' ? ' (keys kept in the database, no TESSERA_JWT_SECRET)' : ' (TESSERA_JWT_SECRET from BENCH_JWT_SECRET)'}; every other setting at its default.`,
  '  No other TESSERA_*/GOTRUE_* variable reaches the server.',
  `- Server CPU per request: utime + stime of the server process (all threads, /proc/PID/stat, ${clk} ticks/s)`,
  '  before and after the run, divided by the requests wrk completed. RSS after: VmRSS right after',
  '  the run; one server serves the poll, warm-pool, password and refresh measurements in that',
  '  order, so its RSS includes what earlier ones left (e.g. buffers of the 4000-connection run).',
  `- nginx ceiling: \`nginx -c <generated conf> -p <tmp> -g 'daemon off;'\` as a child of the script,`,
  `  \`worker_processes ${meta.host_nproc}\` (= the cores, as many as Tessera's HTTP threads, which default`,
  '  to the cores), `location / { return 200 "ok"; }`, `access_log off`, `keepalive_requests 1000000`',
  '  (so that nginx, like Tessera, does not close busy keep-alive connections). The config is kept in',
  '  bench/out/nginx.conf. Its CPU and RSS are those of master + workers.',
  `- Fixtures: ${meta.pool_tokens} pool users, ${meta.runs} × ${meta.refresh_conns} refresh sessions and ${meta.cold_tokens} cold tokens`,
  meta.jwt_alg === 'HS256' ? '  (the access tokens of as many sign-ups: HS256 tokens of one session repeat within a second)'
    : '  (the access tokens returned by refreshes of 64 sessions, driven by wrk with bench/refresh.lua)',
  '  are created through the API (POST /signup, refresh grant) by',
  '  a server on the same database whose hashing is nearly free (argon2id m=8 KiB t=1), so that',
  '  they take seconds; that server is not measured. The password-grant users are created by the',
  '  measured server, with the real cost.',
  `- ulimit -n: ${meta.nofile}. ${meta.nofile_note || ''}`,
  '');

P(`## (d) Ceiling: nginx, fixed 200 "ok", ${base} connections`, '');
const aRow = (name, a, ref) => [name, nf(a.conns), nf(a.rps), ref ? pct(a.rps / ref) : '', ms(a.p50), ms(a.p99), us(a.cpuUs), mb(a.rssKb), errs(a), runsList(a.rpsRuns)];
const aHead = ['Measurement', 'Conn.', 'req/s', '% of nginx', 'p50', 'p99', 'Server CPU / req', 'RSS after', 'non-2xx / socket errors', 'req/s per run'];
if (nginx) table(aHead, [aRow('nginx', nginx, nginx.rps)]);

P('## (a) GET /user', '');
P(`### One token (token-cache hit), poll (default)`, '');
table(aHead, pollConns.filter((c) => poll[c]).map((c) => aRow('poll, one token', poll[c], nginx?.rps)));
P('### One token, epoll (TESSERA_HTTP_EVENT_LOOP=epoll)', '');
P('libmicrohttpd 0.9.75\'s epoll loop has been seen to collapse to a few hundred requests per second',
  'when one of its threads holds exactly 128, 129 or 256 connections, in some runs only; with',
  `${(meta.server_banner || '').match(/(\d+) HTTP threads/)?.[1] || 'N'} HTTP threads the connections are shared between threads, hence 512 (≈ 256 per`,
  'thread) beside the counts asked for. Look at the slowest run, not only at the median.', '');
table(['Conn.', 'epoll req/s', 'poll req/s', 'epoll / poll', 'slowest epoll run', 'p50', 'p99', 'Server CPU / req', 'non-2xx / socket errors', 'req/s per run'],
  epollConns.filter((c) => epoll[c]).map((c) => {
    const e = epoll[c], p = poll[c];
    return [nf(+c), nf(e.rps), p ? nf(p.rps) : 'n/a', p ? pct(e.rps / p.rps) : 'n/a', nf(e.minRps), ms(e.p50), ms(e.p99), us(e.cpuUs), errs(e), runsList(e.rpsRuns)];
  }));
P(stalls.length ? `**Stall seen** (a run below 25 % of poll at the same count): ${stalls.join('; ')}.`
  : 'No epoll run fell below 25 % of poll at the same connection count in this run of the benchmark.', '');

P(`### Token cache: one token vs ${meta.pool_tokens} distinct tokens, ${base} connections`, '');
P(`- warm: ${meta.pool_tokens} tokens of ${meta.pool_tokens} distinct users, round-robin (bench/user_pool.lua), after a`,
  '  1-second pass that put every one in the cache.',
  `- cold: ${meta.cold_tokens} distinct tokens the server has never seen, each presented exactly once`,
  '  (bench/user_cold.lua), to a server started fresh for each run: every request is a cache miss',
  '  and an ES256/HS256 signature check. Its req/s is timed by the script from the first request',
  '  to the last response.', '');
const cacheCol = (a) => (a.exSum('cache_hits') || a.exSum('cache_misses') ? `${nf(a.exSum('cache_hits'))} / ${nf(a.exSum('cache_misses'))}` : 'n/a');
table(['Tokens', 'req/s', 'p50', 'p99', 'Server CPU / req', 'RSS after', 'cache hits / misses', 'non-2xx / socket errors', 'req/s per run'],
  [[single, 'one token'], [warm, `${meta.pool_tokens}, warm`], [cold, `${meta.cold_tokens}, cold`]].filter(([a]) => a).map(([a, n]) =>
    [n, nf(a.rps), ms(a.p50), ms(a.p99), us(a.cpuUs), mb(a.rssKb), a === single ? 'all hits after the first' : cacheCol(a), errs(a), runsList(a.rpsRuns)]));
if (warm && cold) P(`A cache miss costs ${us(cold.cpuUs - warm.cpuUs)} more server CPU per request than a hit (cold vs warm pool).`, '');

P(`### Request logging: TESSERA_LOG_REQUESTS=false vs true, one token, ${base} connections`, '');
if (nolog && logreq) {
  const bytes = logreq.runs.reduce((s, r) => s + (r.ex.log_bytes || 0), 0) / Math.max(1, logreq.requests);
  table(['LOG_REQUESTS', 'req/s', 'p50', 'p99', 'Server CPU / req', 'log bytes / req', 'non-2xx / socket errors', 'req/s per run'], [
    ['false', nf(nolog.rps), ms(nolog.p50), ms(nolog.p99), us(nolog.cpuUs), nf(nolog.runs.reduce((s, r) => s + (r.ex.log_bytes || 0), 0) / Math.max(1, nolog.requests), 0), errs(nolog), runsList(nolog.rpsRuns)],
    ['true', nf(logreq.rps), ms(logreq.p50), ms(logreq.p99), us(logreq.cpuUs), nf(bytes, 0), errs(logreq), runsList(logreq.rpsRuns)],
  ]);
  P(`Difference (true vs false): ${pct(logreq.rps / nolog.rps - 1)} req/s, ${us(logreq.cpuUs - nolog.cpuUs)} server CPU per request,`,
    `p99 ${ms(nolog.p99)} → ${ms(logreq.p99)}. The two settings alternate run by run, each on a server started for`,
    'that run (1 s warm-up); the log went to an append-mode file on local disk (the server\'s',
    'stdout/stderr), as with a plain `tessera serve >>file`.', '');
}

P(`## (b) Password grant`, '');
if (raw) {
  P(`Raw argon2id: bench/argon2_raw.c, ${meta.hash_workers} thread(s) (= TESSERA_PASSWORD_HASH_WORKERS) calling`,
    `libsodium's crypto_pwhash_str (m = ${meta.hash_mem_kib} KiB, t = ${meta.hash_iter}, p = 1) back to back for ${meta.duration} s, no server running`,
    'any load.', '');
  table(['Raw argon2id', 'hashes/s', 'ms per hash per thread', 'hashes/s per run'],
    [[`${meta.hash_workers} thread(s)`, nf(rawRate, 1), nf(raw.b('ms_per_hash'), 1), raw.runs.map((r) => nf(r.w?.bench?.rate, 1)).join(' / ')]]);
}
if (login) {
  P(`Password grant: POST /token?grant_type=password, ${meta.login_conns} connections, ${meta.login_users} users round-robin (bench/login.lua).`, '');
  table(['', 'logins/s', 'vs raw', 'p50', 'p99', 'Server CPU / login', 'hash time / job', 'queue wait / job', '429 (queue full)', 'non-2xx / socket errors', 'logins/s per run'], [
    ['password grant', nf(login.rps, 1), pct(loginRatio), ms(login.p50), ms(login.p99), us(login.cpuUs), `${nf(login.ex('pool_run_ms_per_job'), 1)} ms`,
      `${nf(login.ex('pool_wait_ms_per_job'), 0)} ms`, nf(login.exSum('pool_rejected')), errs(login), runsList(login.rpsRuns.map((x) => Math.round(x * 10) / 10))],
  ]);
  P(`Target ≥ 90 % of the raw rate: ${status(loginRatio >= 0.9)} (${pct(loginRatio)}). Hash time / job comes from tessera_hashpool_run_seconds_total.`, '');
}
if (concUser && concLogin) {
  P(`### GET /user while logins saturate the hash pool`, '');
  P(`wrk with bench/login.lua (${meta.login_conns} connections) starts first and runs ${+meta.duration + 2} s; one second later a second`,
    `wrk runs GET /user (one token, ${base} connections) for ${meta.duration} s. Pool state is read from /metrics at that moment.`, '');
  table(['', 'req/s', 'p50', 'p99', 'worst-run p99', 'non-2xx / socket errors', 'req/s per run'], [
    [`GET /user, ${base} conn.`, nf(concUser.rps), ms(concUser.p50), ms(concUser.p99), ms(concUser.p99max), errs(concUser), runsList(concUser.rpsRuns)],
    [`password grant, ${meta.login_conns} conn.`, nf(concLogin.rps, 1), ms(concLogin.p50), ms(concLogin.p99), ms(concLogin.p99max), errs(concLogin), runsList(concLogin.rpsRuns.map((x) => Math.round(x * 10) / 10))],
  ]);
  P(`Hash pool when GET /user started: ${concUser.runs.map((r) => `run ${r.run}: ${r.ex.pool_running} running, ${r.ex.pool_queue} queued`).join('; ')}` +
    ` (${meta.hash_workers} workers). Server CPU per request over both: ${us(concUser.cpuUs)}; RSS after: ${mb(concUser.rssKb)}.`,
    `Target p99 < 5 ms: ${status(concUser.p99 < 5)}.`, '');
}

P(`## (c) Refresh grant`, '');
if (refresh) {
  P(`POST /token?grant_type=refresh_token, ${meta.refresh_conns} connections, one session per connection created by`,
    'POST /signup beforehand (a new set for every run). bench/refresh.lua keeps each thread\'s tokens,',
    'sends one it has never sent, and takes the new refresh token from the response body, so no token',
    'is ever presented twice (no reuse, not even within the reuse interval).', '');
  table(['', 'refreshes/s', 'p50', 'p99', 'Server CPU / req', 'RSS after', 'non-2xx', 'socket errors', 'starved / unparsed', 'refreshes/s per run'], [
    ['refresh grant', nf(refresh.rps), ms(refresh.p50), ms(refresh.p99), us(refresh.cpuUs), mb(refresh.rssKb), nf(refresh.non2xx),
      `${nf(refresh.sock)}${refresh.sockDetail ? ` (${refresh.sockDetail})` : ''}`, `${nf(refresh.bSum('refresh_starved'))} / ${nf(refresh.bSum('refresh_unparsed'))}`, runsList(refresh.rpsRuns)],
  ]);
  P(`Target ≥ 3,000 refreshes/s with 0 non-2xx: ${status(refresh.rps >= 3000 && refreshErrors === 0)}.`, '');
}

P('## Start-up and idle memory', '');
P(`Start-up: from exec of \`tessera serve\` (database already migrated; migrate took ${meta.migrate_ms} ms) to the`,
  'first 200 from GET /health, polled every 5 ms. Idle RSS: VmRSS right after that answer.', '');
table(['Server start', 'start-up', 'idle RSS'], starts.map((r) => [r.label, ms(r.ex.startup_ms), mb(r.ex.idle_rss_kb)]));

// The native API's figures, written by bench/v1.sh: carried over as they are.
if (existsSync(resultsPath)) {
  const old = readFileSync(resultsPath, 'utf8');
  const m = old.match(/\n## Native API \(\/v1\)\n([\s\S]*?)(?=\n## |$)/);
  if (m && m[1].trim()) P('## Native API (/v1)', '', ...m[1].trim().split('\n'), '');
}

// Authorization's figures, written by bench/authz.sh: carried over as they are.
if (existsSync(resultsPath)) {
  const old = readFileSync(resultsPath, 'utf8');
  const m = old.match(/\n## Authorization \(\/v1\/authz\)\n([\s\S]*?)(?=\n## |$)/);
  if (m && m[1].trim()) P('## Authorization (/v1/authz)', '', ...m[1].trim().split('\n'), '');
}

P('## Durability', '');
const placeholder = ['Kill -9 durability of the refresh grant is checked outside this harness; the lead',
  'engineer records the method and the result in this section, which bench/run.sh carries over',
  'from one RESULTS.md to the next.'];
let durability = placeholder;
if (existsSync(resultsPath)) {
  const old = readFileSync(resultsPath, 'utf8');
  const m = old.match(/\n## Durability\n([\s\S]*?)(?=\n## |$)/);
  if (m && m[1].trim()) durability = m[1].trim().split('\n');
}
P(...durability, '');

// The lead's reading of the figures: written by hand, carried over like Durability.
if (existsSync(resultsPath)) {
  const old = readFileSync(resultsPath, 'utf8');
  const m = old.match(/\n## Reading the figures\n([\s\S]*?)(?=\n## |$)/);
  if (m && m[1].trim()) P('## Reading the figures', '', ...m[1].trim().split('\n'), '');
}

P('## How to rerun', '');
P('```sh',
  'make bench                                  # build (release, gcc -O2), then bench/run.sh',
  'BENCH_RUNS=5 BENCH_DURATION=20 bash bench/run.sh',
  'BENCH_QUICK=1 bash bench/run.sh             # smoke test: 2 s x 1 run',
  'bash bench/v1.sh                            # the native API (/v1): its own section above',
  'bash bench/authz.sh                         # authorization (/v1/authz): its own section above',
  'node bench/report.mjs bench/out bench/RESULTS.md   # rewrite this file from kept raw outputs',
  '```', '');
P('Other knobs: BENCH_THREADS (wrk -t), BENCH_POLL_CONNS, BENCH_EPOLL_CONNS, BENCH_POOL_TOKENS,',
  'BENCH_COLD_TOKENS, BENCH_LOGIN_CONNS, BENCH_LOGIN_USERS, BENCH_REFRESH_CONNS, BENCH_JWT_SECRET',
  '(HS256 instead of ES256), BENCH_MAX_SECONDS, TESSERA_BIN, TESSERA_PASSWORD_HASH_WORKERS /',
  '_MEMORY_KIB / _ITERATIONS. Run it on a quiet machine: nothing else compiling, no other load.',
  'Raw wrk outputs, server logs, results.tsv and meta.env are in bench/out/ (git-ignored).', '');

writeFileSync(resultsPath, L.join('\n'));
