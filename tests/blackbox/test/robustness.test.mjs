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

/** `rounds` times: N concurrent metadata updates of one user, each with its own key; all must stick. */
async function mergeRace(prefix, send, rounds = 4, n = 100) {
  for (let round = 0; round < rounds; round++) {
    const u = await newUser(server, { prefix: `${prefix}-${round}` });
    const results = await Promise.all(Array.from({ length: n }, (_, i) => send(u, `k${i}`, i)));
    assert.deepEqual([...new Set(results.map((r) => r.status))], [200], results.find((r) => r.status !== 200)?.text);
    const me = await getUserRaw(server, u.session.access_token);
    const lost = [];
    for (let i = 0; i < n; i++) if (me.body.user_metadata[`k${i}`] !== i) lost.push(`k${i}`);
    assert.deepEqual(lost, [], `round ${round}: ${lost.length} of ${n} concurrent updates lost`);
  }
}

test('concurrent updateUser calls each merge their key (no lost update)', async () => {
  await mergeRace('merge-race', (u, k, v) =>
    api(server, 'PUT', '/user', { token: u.session.access_token, body: { data: { [k]: v } } }));
});

test('concurrent admin updateUserById calls each merge their key (no lost update)', async () => {
  await mergeRace('admin-merge-race', (u, k, v) =>
    api(server, 'PUT', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { user_metadata: { [k]: v } } }));
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

test('deleting a user while it logs in, refreshes and updates: no 5xx, nothing survives', async () => {
  for (let round = 0; round < 8; round++) {
    const u = await newUser(server, { prefix: `del-race-${round}` });
    const results = await Promise.all([
      refreshRaw(server, u.session.refresh_token),
      passwordRaw(server, u.email, u.password),
      api(server, 'DELETE', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { should_soft_delete: false } }),
      refreshRaw(server, u.session.refresh_token),
      passwordRaw(server, u.email, u.password),
      api(server, 'PUT', '/user', { token: u.session.access_token, body: { data: { racing: round } } }),
      getUserRaw(server, u.session.access_token),
      api(server, 'POST', '/logout?scope=others', { token: u.session.access_token }),
    ]);
    const del = results[2];
    assert.equal(del.status, 200, `delete: ${del.text}`);
    for (const r of results) assert.ok(r.status < 500, `${r.status} ${r.text}`);
    // Every session that any of these requests produced is dead now.
    for (const r of results) {
      if (r.status === 200 && r.body?.access_token) {
        const g = await getUserRaw(server, r.body.access_token);
        assert.equal(g.status, 403, `round ${round}: a token issued during the delete race still works: ${g.text}`);
        assert.equal((await refreshRaw(server, r.body.refresh_token)).status, 400);
      }
    }
    assert.equal((await getUserRaw(server, u.session.access_token)).status, 403);
    assert.equal((await passwordRaw(server, u.email, u.password)).status, 400);
  }
});

test('banning a user while it logs in and refreshes: nothing issued survives the ban', async () => {
  for (let round = 0; round < 5; round++) {
    const u = await newUser(server, { prefix: `ban-race-${round}` });
    const results = await Promise.all([
      refreshRaw(server, u.session.refresh_token),
      passwordRaw(server, u.email, u.password),
      api(server, 'PUT', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { ban_duration: '1h' } }),
      passwordRaw(server, u.email, u.password),
      refreshRaw(server, u.session.refresh_token),
    ]);
    assert.equal(results[2].status, 200, results[2].text);
    for (const r of results) assert.ok(r.status < 500, `${r.status} ${r.text}`);
    for (const r of results) {
      if (r.status === 200 && r.body?.access_token) {
        const g = await getUserRaw(server, r.body.access_token);
        assert.equal(g.status, 403, `round ${round}: a token issued during the ban race still works: ${g.text}`);
      }
    }
    const again = await passwordRaw(server, u.email, u.password);
    assertApiError(again, 400, 'user_banned');
  }
});

test('mixed concurrent load: no 5xx and the server stays consistent', async () => {
  const users = [];
  for (let i = 0; i < 4; i++) users.push(await newUser(server, { prefix: `mixed-${i}` }));
  const tokens = users.map((u) => ({ ...u, rt: u.session.refresh_token, at: u.session.access_token }));
  const ops = [];
  for (let i = 0; i < 120; i++) {
    const t = tokens[i % tokens.length];
    switch (i % 6) {
      case 0: ops.push(() => getUserRaw(server, t.at)); break;
      case 1: ops.push(async () => {
        const r = await refreshRaw(server, t.rt);
        if (r.status === 200) { t.rt = r.body.refresh_token; t.at = r.body.access_token; }
        return r;
      }); break;
      case 2: ops.push(() => passwordRaw(server, t.email, t.password)); break;
      case 3: ops.push(() => api(server, 'PUT', '/user', { token: t.at, body: { data: { n: i } } })); break;
      case 4: ops.push(() => api(server, 'GET', '/admin/users?page=1&per_page=5', { token: server.serviceKey })); break;
      default: ops.push(() => api(server, 'POST', '/signup', { body: { email: uniqueEmail('mixed-new'), password: 'correct-horse-1' } }));
    }
  }
  const statuses = {};
  let next = 0;
  await Promise.all(Array.from({ length: 12 }, async () => {
    while (next < ops.length) {
      const r = await ops[next++]();
      statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    }
  }));
  const bad = Object.keys(statuses).filter((s) => !['200', '400'].includes(s));
  assert.deepEqual(bad, [], `statuses: ${JSON.stringify(statuses)}`);
  for (const t of tokens) {
    const r = await refreshRaw(server, t.rt);
    assert.equal(r.status, 200, `latest refresh token of ${t.email}: ${r.text}`);
  }
});
