// fixtures.mjs - creates the users, sessions and tokens the benchmark needs, through the
// public API of a running server (POST /signup, POST /token?grant_type=refresh_token).
// Run by bench/run.sh; nothing here is measured.
//
// usage: node fixtures.mjs BASE_URL OUT_DIR MODE [options as KEY=VALUE]
//   MODE bulk   pool=N refresh_conns=C refresh_sets=S chains=H
//       pool_tokens.txt     N access tokens of N distinct users (one sign-up each)
//       refresh_set<k>.txt  C refresh tokens of C distinct users, k = 1..S (one set per
//                           measured run, so that no refresh token is ever used twice)
//       cold_heads.txt      H refresh tokens of H more users: run.sh refreshes them over
//                           and over with wrk (refresh.lua) and keeps the access tokens
//                           returned, tokens the measured server has never seen
//       cold_signup_tokens.txt  the H access tokens of those sign-ups (run.sh's cold tokens
//                           under HS256, whose tokens repeat within a second of one session)
//   MODE login  users=U
//       login_users.txt     U lines "email<TAB>password" of freshly signed-up users
const [base, outDir, mode, ...rest] = process.argv.slice(2);
const opt = Object.fromEntries(rest.map((kv) => kv.split('=')));
import { writeFileSync } from 'node:fs';

const PASSWORD = 'bench-Passw0rd!';
const CONCURRENCY = 32;

async function post(path, body) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.ok) return JSON.parse(text);
    // 429 = hash queue full; anything else is a real failure.
    if (res.status !== 429 || attempt > 50) throw new Error(`${path}: HTTP ${res.status}: ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Runs fn(i) for i in [0, n) with at most CONCURRENCY in flight; results in order.
async function pmap(n, fn) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  }
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, n) }, worker));
  return out;
}

const signup = (email) => post('/signup', { email, password: PASSWORD });

async function bulk() {
  const pool = +opt.pool, conns = +opt.refresh_conns, sets = +opt.refresh_sets;
  const chains = +opt.chains;
  const t0 = Date.now();
  const pt = await pmap(pool, (i) => signup(`bench-pool-${i}@example.com`));
  writeFileSync(`${outDir}/pool_tokens.txt`, pt.map((s) => s.access_token).join('\n') + '\n');

  for (let k = 1; k <= sets; k++) {
    const rs = await pmap(conns, (i) => signup(`bench-refresh-${k}-${i}@example.com`));
    writeFileSync(`${outDir}/refresh_set${k}.txt`, rs.map((s) => s.refresh_token).join('\n') + '\n');
  }

  // Heads of the refresh chains that mint the cold tokens (run.sh drives them with wrk).
  const heads = await pmap(chains, (i) => signup(`bench-cold-${i}@example.com`));
  writeFileSync(`${outDir}/cold_heads.txt`, heads.map((s) => s.refresh_token).join('\n') + '\n');
  writeFileSync(`${outDir}/cold_signup_tokens.txt`, heads.map((s) => s.access_token).join('\n') + '\n');
  console.log(`fixtures: ${pool} pool users, ${sets}x${conns} refresh sessions, ` +
    `${chains} cold-chain sessions in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

async function login() {
  const users = +opt.users;
  const lines = [];
  await pmap(users, async (i) => {
    const email = `bench-login-${i}@example.com`;
    await signup(email);
    lines[i] = `${email}\t${PASSWORD}`;
  });
  writeFileSync(`${outDir}/login_users.txt`, lines.join('\n') + '\n');
}

const modes = { bulk, login };
if (!modes[mode]) {
  console.error('usage: node fixtures.mjs BASE_URL OUT_DIR bulk|login [KEY=VALUE...]');
  process.exit(2);
}
modes[mode]().catch((e) => {
  console.error('fixtures:', e.message);
  process.exit(1);
});
