// fixtures.mjs - the users and sessions tests/soak/soak.sh loads the server with, created
// through the public API of the running server (POST /signup, POST /token). Nothing here is
// measured.
//
// usage: node fixtures.mjs BASE_URL OUT_DIR USERS SESSIONS_PER_SET SETS
//   users.txt       USERS lines "email<TAB>password" (the password logins of the mix)
//   access.txt      USERS access tokens, one per user (the GET /user checks)
//   refresh<k>.txt  SESSIONS_PER_SET refresh tokens of fresh sessions, k = 1..SETS: one set per
//                   wrk run, since a refresh token is spent by its use
import { writeFileSync } from 'node:fs';

const [base, outDir, users, perSet, sets] = process.argv.slice(2);
const PASSWORD = 'soak-Passw0rd!';
const CONCURRENCY = 8;

async function post(path, body) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (res.ok) return JSON.parse(text);
    // 429: the hash queue is full for a moment; anything else is a real failure.
    if (res.status !== 429 || attempt > 100) throw new Error(`${path}: HTTP ${res.status}: ${text}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function pmap(n, fn) {
  const out = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, n) }, worker));
  return out;
}

const tag = Date.now().toString(36);
const emails = Array.from({ length: +users }, (_, i) => `soak-${tag}-${i}@example.com`);
const signups = await pmap(emails.length, (i) => post('/signup', { email: emails[i], password: PASSWORD }));
writeFileSync(`${outDir}/users.txt`, emails.map((e) => `${e}\t${PASSWORD}`).join('\n') + '\n');
writeFileSync(`${outDir}/access.txt`, signups.map((s) => s.access_token).join('\n') + '\n');
for (let k = 1; k <= +sets; k++) {
  // Sessions of a set come from password logins spread over the users.
  const sessions = await pmap(+perSet, (i) =>
    post('/token?grant_type=password', { email: emails[i % emails.length], password: PASSWORD }),
  );
  writeFileSync(`${outDir}/refresh${k}.txt`, sessions.map((s) => s.refresh_token).join('\n') + '\n');
}
