// Bad input of any kind is a clean 4xx JSON error, never a crash or a 5xx; races stay consistent
// (SPEC §6). The 5xx check itself runs in after() through finish().
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer,
  finish,
  test,
  newUser,
  uniqueEmail,
  api,
  getUserRaw,
  refreshRaw,
  passwordRaw,
  assertApiError,
} from '../lib/server.mjs';

let server;
let victim;

before(async () => {
  server = await startServer({ EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true' });
  victim = await newUser(server, { prefix: 'robust' });
});

after(async () => {
  await finish(server);
});

const weird = [
  null, true, 0, -1, 1e308, '', ' ', 'a'.repeat(100000), '\u0000', 'é\u0301🙂', ['x'], { a: { b: { c: 1 } } },
];

function is4xx(res, what) {
  assert.ok(res.status >= 400 && res.status < 500, `${what}: ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(res.body && typeof res.body === 'object', `${what}: error body is not JSON: ${res.text.slice(0, 300)}`);
}

test('signup with odd field values: 200 or 4xx JSON, never 5xx', async () => {
  for (const v of weird) {
    for (const field of ['email', 'password', 'data']) {
      const body = { email: uniqueEmail('odd'), password: 'correct-horse-1', [field]: v };
      const res = await api(server, 'POST', '/signup', { body });
      assert.ok(res.status === 200 || (res.status >= 400 && res.status < 500),
        `${field}=${JSON.stringify(v).slice(0, 40)}: ${res.status} ${res.text.slice(0, 200)}`);
      if (res.status === 200 && field === 'data') {
        assert.ok(v === null || (typeof v === 'object' && !Array.isArray(v)),
          `data=${JSON.stringify(v).slice(0, 40)} accepted: ${res.text.slice(0, 200)}`);
      }
    }
  }
});

test('token and user endpoints with odd field values: 4xx JSON', async () => {
  for (const v of weird) {
    is4xx(await api(server, 'POST', '/token?grant_type=password', { body: { email: v, password: v } }), `password grant ${JSON.stringify(v).slice(0, 30)}`);
    is4xx(await api(server, 'POST', '/token?grant_type=refresh_token', { body: { refresh_token: v } }), `refresh ${JSON.stringify(v).slice(0, 30)}`);
    if (v !== null && !(typeof v === 'object' && !Array.isArray(v))) {
      is4xx(await api(server, 'PUT', '/user', { token: victim.session.access_token, body: { data: v } }), `PUT data ${JSON.stringify(v).slice(0, 30)}`);
    }
  }
  const me = await getUserRaw(server, victim.session.access_token);
  assert.equal(me.status, 200);
});

test('deeply nested and hostile JSON is refused cleanly', async () => {
  const deep = `${'['.repeat(100000)}${']'.repeat(100000)}`;
  const deepObj = `{"email":"a@example.com","password":"correct-horse-1","data":${'{"a":'.repeat(50000)}1${'}'.repeat(50000)}}`;
  for (const [name, rawBody] of [
    ['deep array', deep],
    ['deep object', deepObj],
    ['huge number', '{"email":"a@example.com","password":1e999999}'],
    ['bad escape', '{"email":"\\ud800","password":"\\x"}'],
    ['trailing garbage', '{"email":"a@example.com","password":"correct-horse-1"} xyz'],
    ['nul byte', '{"email":"a\u0000@example.com","password":"correct-horse-1"}'],
  ]) {
    const res = await api(server, 'POST', '/signup', { rawBody, headers: { 'Content-Type': 'application/json' } });
    is4xx(res, name);
  }
  // Invalid UTF-8 bytes.
  const bad = Buffer.concat([Buffer.from('{"email":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('@example.com","password":"correct-horse-1"}')]);
  is4xx(await api(server, 'POST', '/signup', { rawBody: bad, headers: { 'Content-Type': 'application/json' } }), 'invalid utf-8');
  assert.equal((await api(server, 'GET', '/health')).status, 200);
});

test('huge and odd headers are refused or ignored, never a crash', async () => {
  const big = await getUserRaw(server, `${'A'.repeat(200 * 1024)}`);
  assert.ok(big.status >= 400 && big.status < 500, `200 KiB bearer: ${big.status}`);
  const weirdAuth = await api(server, 'GET', '/user', { auth: 'Bearer \u00e9\u00e9.\u00e9.\u00e9' }).catch(() => null);
  if (weirdAuth) assert.ok(weirdAuth.status >= 400 && weirdAuth.status < 500, `latin-1 bearer: ${weirdAuth.status}`);
  const doubled = await api(server, 'GET', '/user', { auth: `Bearer ${victim.session.access_token} ${victim.session.access_token}` });
  assert.ok(doubled.status === 401 || doubled.status === 403, `two tokens: ${doubled.status}`);
  const lower = await api(server, 'GET', '/user', { auth: `bearer ${victim.session.access_token}` });
  assert.ok([200, 401].includes(lower.status), `lower-case scheme: ${lower.status}`);
  const version = await passwordRaw(server, victim.email, 'nope-nope-1', { headers: { 'X-Supabase-Api-Version': 'garbage' } });
  assert.equal(version.status, 400);
  assert.equal((await api(server, 'GET', '/health')).status, 200);
});

test('raw protocol garbage gets a 4xx or a closed connection, and the server lives on', async () => {
  const payloads = [
    'GARBAGE\r\n\r\n',
    'GET / HTTP/9.9\r\nHost: x\r\n\r\n',
    `GET /${'a'.repeat(100000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    'POST /signup HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n',
    'POST /signup HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    `GET /health HTTP/1.1\r\nHost: x\r\n${'X-A: b\r\n'.repeat(5000)}\r\n`,
  ];
  for (const p of payloads) {
    const reply = await new Promise((resolve) => {
      const s = net.connect(Number(new URL(server.url).port), '127.0.0.1');
      let got = '';
      s.setTimeout(5000, () => s.destroy());
      s.on('data', (d) => (got += d));
      s.on('error', () => {});
      s.on('close', () => resolve(got));
      s.write(p, () => s.end());
    });
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(reply);
    if (m) assert.ok(Number(m[1]) < 500 || Number(m[1]) === 505, `${JSON.stringify(p.slice(0, 40))}: ${m[0]}`);
  }
  assert.equal((await api(server, 'GET', '/health')).status, 200);
  assert.equal((await getUserRaw(server, victim.session.access_token)).status, 200);
});

test('racing refreshes and a logout of the same session end consistently', async () => {
  const u = await newUser(server, { prefix: 'race-logout' });
  const [r1, r2, out, r3] = await Promise.all([
    refreshRaw(server, u.session.refresh_token),
    refreshRaw(server, u.session.refresh_token),
    api(server, 'POST', '/logout', { token: u.session.access_token }),
    refreshRaw(server, u.session.refresh_token),
  ]);
  assert.equal(out.status, 204, out.text);
  for (const r of [r1, r2, r3]) assert.ok(r.status === 200 || r.status === 400, `${r.status} ${r.text}`);
  // Whatever won the race, after a global logout nothing of the session is alive.
  for (const r of [r1, r2, r3]) {
    if (r.status !== 200) continue;
    assertApiError(await getUserRaw(server, r.body.access_token), 403, 'session_not_found');
    assert.equal((await refreshRaw(server, r.body.refresh_token)).status, 400);
  }
});

test('concurrent updateUser calls each merge their key (no lost update)', async () => {
  const u = await newUser(server, { prefix: 'merge-race' });
  const results = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      api(server, 'PUT', '/user', { token: u.session.access_token, body: { data: { [`k${i}`]: i } } })),
  );
  assert.deepEqual(results.map((r) => r.status), Array(10).fill(200));
  const me = await getUserRaw(server, u.session.access_token);
  for (let i = 0; i < 10; i++) assert.equal(me.body.user_metadata[`k${i}`], i, `k${i} lost: ${JSON.stringify(me.body.user_metadata)}`);
});

test('concurrent anonymous sign-ins and password logins do not 5xx', async () => {
  const jobs = [];
  for (let i = 0; i < 10; i++) {
    jobs.push(api(server, 'POST', '/signup', { body: { data: {} } }));
    jobs.push(passwordRaw(server, victim.email, victim.password));
  }
  const results = await Promise.all(jobs);
  for (const r of results) assert.equal(r.status, 200, r.text);
});
