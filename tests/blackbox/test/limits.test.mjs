// Abuse controls (docs/SECURITY.md): token buckets per client address (the peer, or the
// trusted proxy header when RATE_LIMIT_HEADER names one), per account and per API key; account
// lockout counted before the password is checked, so parallel guesses (on one node, and on two
// nodes sharing PostgreSQL) never get more than PASSWORD_LOCKOUT_ATTEMPTS checks; per-profile
// request budgets on /v1 where an unset rate_limit inherits; 429 with Retry-After in each API's
// error shape.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  startServer,
  finish,
  test,
  api,
  newUser,
  passwordRaw,
  uniqueEmail,
  PG,
} from '../lib/server.mjs';
import { v1, caller, setupKeys, createCollection, createDoc, uniqueName, expect } from '../lib/v1.mjs';

const servers = [];
after(() => finish(...servers));

async function start(env, opts) {
  const s = await startServer(env, opts);
  servers.push(s);
  return s;
}

function assertTooMany(res, shape) {
  assert.equal(res.status, 429, `expected 429, got ${res.status} ${JSON.stringify(res.body)}`);
  const retry = Number(res.headers.get('retry-after'));
  assert.ok(Number.isInteger(retry) && retry >= 1, `Retry-After "${res.headers.get('retry-after')}"`);
  if (shape === 'gotrue') assert.equal(res.body.error_code ?? res.body.code, 'over_request_rate_limit');
  else assert.equal(res.body.error.code, 'too_many_requests');
  return retry;
}

const xff = (addr) => ({ headers: { 'X-Forwarded-For': addr } });

test('per-address limit on /token: the burst passes, then 429 over_request_rate_limit with Retry-After', async () => {
  const s = await start({ RATE_LIMIT_EXEMPT: '', RATE_LIMIT_TOKEN_REFRESH: '4/1h,4' });
  const email = uniqueEmail('addr');
  for (let i = 0; i < 4; i++) {
    const r = await passwordRaw(s, email, 'wrong-password-1');
    assert.equal(r.status, 400, `attempt ${i + 1}`);
  }
  const r = await passwordRaw(s, email, 'wrong-password-1');
  const retry = assertTooMany(r, 'gotrue');
  assert.ok(retry > 60 && retry <= 900, `one token comes back every 15 min: ${retry}`);
  // the refresh grant and /v1/login share the bucket (RATE_LIMIT_TOKEN_REFRESH covers them)
  const rr = await api(s, 'POST', '/token?grant_type=refresh_token', { body: { refresh_token: 'x'.repeat(20) } });
  assertTooMany(rr, 'gotrue');
  const lv = await v1(s, 'POST', '/v1/login', { body: { collection: 'users', id: crypto.randomUUID(), password: 'x' } });
  assertTooMany(lv, 'v1');
  // other endpoints are not limited by it
  const health = await api(s, 'GET', '/health');
  assert.equal(health.status, 200);
});

test('loopback peers are exempt by default; X-Forwarded-For is not trusted unless configured', async () => {
  const s = await start({ RATE_LIMIT_TOKEN_REFRESH: '2/1h,2' });
  const email = uniqueEmail('exempt');
  for (let i = 0; i < 5; i++) {
    const r = await passwordRaw(s, email, 'wrong-password-1', xff(`203.0.113.${i}`));
    assert.equal(r.status, 400, `attempt ${i + 1}: the header must not be believed`);
  }
});

test('with RATE_LIMIT_HEADER, each client address (the last entry) has its own bucket', async () => {
  const s = await start({ RATE_LIMIT_HEADER: 'X-Forwarded-For', RATE_LIMIT_TOKEN_REFRESH: '2/1h,2' });
  const email = uniqueEmail('hdr');
  // a forged first entry does not change the bucket: the proxy appended the real one last
  for (const lead of ['1.1.1.1', '9.9.9.9']) {
    const r = await passwordRaw(s, email, 'wrong-password-1', xff(`${lead}, 198.51.100.7`));
    assert.equal(r.status, 400);
  }
  assertTooMany(await passwordRaw(s, email, 'wrong-password-1', xff('5.5.5.5, 198.51.100.7')), 'gotrue');
  // another client is still served, and IPv6 clients count per /64
  assert.equal((await passwordRaw(s, email, 'wrong-password-1', xff('198.51.100.8'))).status, 400);
  assert.equal((await passwordRaw(s, email, 'wrong-password-1', xff('2001:db8:1:2::1'))).status, 400);
  assert.equal((await passwordRaw(s, email, 'wrong-password-1', xff('2001:db8:1:2::ffff'))).status, 400);
  assertTooMany(await passwordRaw(s, email, 'wrong-password-1', xff('2001:db8:1:2:aaaa::1')), 'gotrue');
  assert.equal((await passwordRaw(s, email, 'wrong-password-1', xff('2001:db8:1:3::1'))).status, 400);
});

// A raw request with the given header lines (fetch merges repeated names; a proxy may not).
function rawRequest(server, lines, body) {
  const u = new URL(server.url);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname, () => {
      const head = [
        'POST /token?grant_type=password HTTP/1.1',
        `Host: ${u.host}`,
        'Content-Type: application/json',
        `apikey: ${server.anonKey}`,
        `Content-Length: ${Buffer.byteLength(body)}`,
        'Connection: close',
        ...lines,
      ];
      sock.write(`${head.join('\r\n')}\r\n\r\n${body}`);
    });
    let data = '';
    sock.on('data', (d) => (data += d));
    sock.on('end', () => resolve(Number(data.split(' ')[1])));
    sock.on('error', reject);
  });
}

test('the trusted header: every line counts, read from the right past our own proxies', async () => {
  const s = await start({
    RATE_LIMIT_HEADER: 'X-Forwarded-For',
    RATE_LIMIT_TOKEN_REFRESH: '2/1h,2',
    RATE_LIMIT_EXEMPT: '127.0.0.0/8,10.0.0.0/8',
  });
  const body = JSON.stringify({ email: uniqueEmail('lines'), password: 'wrong-password-1' });
  // the client's forged first line changes nothing: the proxy's own line comes last
  const statuses = [];
  for (const forged of ['1.1.1.1', '127.0.0.1', '9.9.9.9']) {
    statuses.push(await rawRequest(s, [`X-Forwarded-For: ${forged}`, 'X-Forwarded-For: 198.51.100.20'], body));
  }
  assert.deepEqual(statuses, [400, 400, 429]);
  // a load balancer (10/8) behind the proxy: the client is the entry before it
  const email = uniqueEmail('hops');
  for (let i = 0; i < 2; i++) {
    const r = await passwordRaw(s, email, 'wrong-password-1', xff(`${i}.2.3.4, 198.51.100.21, 10.0.0.5`));
    assert.equal(r.status, 400);
  }
  assertTooMany(await passwordRaw(s, email, 'wrong-password-1', xff('198.51.100.21:4431, 10.0.0.6')), 'gotrue');
  // a chain of our own proxies only: exempt
  for (let i = 0; i < 4; i++) {
    assert.equal((await passwordRaw(s, email, 'wrong-password-1', xff('10.1.1.1, 10.0.0.5'))).status, 400);
  }
});

test('sign-ups: RATE_LIMIT_OTP per address, anonymous sign-ins in their own bucket', async () => {
  const s = await start({
    RATE_LIMIT_EXEMPT: '',
    RATE_LIMIT_OTP: '2/1h',
    RATE_LIMIT_ANONYMOUS_USERS: '1/1h',
    EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true',
  });
  for (let i = 0; i < 2; i++) {
    const r = await api(s, 'POST', '/signup', { body: { email: uniqueEmail('su'), password: 'correct-horse-1' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  assertTooMany(await api(s, 'POST', '/signup', { body: { email: uniqueEmail('su'), password: 'correct-horse-1' } }), 'gotrue');
  assert.equal((await api(s, 'POST', '/signup', { body: {} })).status, 200);
  assertTooMany(await api(s, 'POST', '/signup', { body: {} }), 'gotrue');
});

test('lockout: after N failures even the right password gets 429 until the window ends; unknown e-mails alike', async () => {
  const s = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '3', PASSWORD_LOCKOUT_WINDOW: '1h' });
  const { email, password } = await newUser(s, { prefix: 'lock' });
  const ghost = uniqueEmail('ghost');
  for (const who of [email, ghost]) {
    for (let i = 0; i < 3; i++) {
      const r = await passwordRaw(s, who, 'wrong-password-1');
      assert.equal(r.status, 400, `${who} attempt ${i + 1}`);
      assert.equal(r.body.error_code ?? r.body.code, 'invalid_credentials');
    }
    const locked = await passwordRaw(s, who, who === email ? password : 'wrong-password-1');
    const retry = assertTooMany(locked, 'gotrue');
    assert.ok(retry > 3000 && retry <= 3600, `locked for the window: ${retry}`);
  }
  // the lock is per account: another account signs in
  const other = await newUser(s, { prefix: 'lock2' });
  assert.equal((await passwordRaw(s, other.email, other.password)).status, 200);
  // the same account through /v1/login (users by e-mail) is locked too
  assert.equal((await passwordRaw(s, email, password)).status, 429);
  const viaV1 = await v1(s, 'POST', '/v1/login', {
    body: { collection: 'users', index: 'users_by_email', term: email, password },
  });
  assert.equal(viaV1.status, 429);
});

test('lockout: a success clears the failures; a wrong current_password on PUT /user counts', async () => {
  const s = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '3', PASSWORD_LOCKOUT_WINDOW: '1h' });
  const { email, password } = await newUser(s, { prefix: 'clear' });
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 2; i++) assert.equal((await passwordRaw(s, email, 'wrong-password-1')).status, 400);
    assert.equal((await passwordRaw(s, email, password)).status, 200, `round ${round}`);
  }
  const session = (await passwordRaw(s, email, password)).body;
  const auth = { headers: { Authorization: `Bearer ${session.access_token}` } };
  for (let i = 0; i < 3; i++) {
    const r = await api(s, 'PUT', '/user', { ...auth, body: { password: 'new-password-22', current_password: 'nope-nope-1' } });
    assert.equal(r.status, 400, JSON.stringify(r.body));
  }
  const r = await api(s, 'PUT', '/user', { ...auth, body: { password: 'new-password-22', current_password: password } });
  assertTooMany(r, 'gotrue');
  assert.equal((await passwordRaw(s, email, password)).status, 429);
});

test('lockout cannot be raced: 60 parallel wrong guesses get at most N password checks', async () => {
  const s = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '5', PASSWORD_LOCKOUT_WINDOW: '1h' });
  const { email } = await newUser(s, { prefix: 'race' });
  const results = await Promise.all(
    Array.from({ length: 60 }, () => passwordRaw(s, email, 'wrong-password-1')),
  );
  const statuses = results.map((r) => r.status);
  const checked = statuses.filter((x) => x === 400).length;
  const refused = statuses.filter((x) => x === 429).length;
  assert.equal(checked + refused, 60, `only 400 and 429: ${statuses}`);
  assert.equal(checked, 5, `exactly N checks: ${statuses}`);
});

test('lockout across two nodes sharing PostgreSQL: at most N checks in all', { skip: !PG && 'needs PostgreSQL' }, async () => {
  const a = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '4', PASSWORD_LOCKOUT_WINDOW: '1h' });
  const b = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '4', PASSWORD_LOCKOUT_WINDOW: '1h' }, { shareWith: a });
  const { email } = await newUser(a, { prefix: 'nodes' });
  const results = await Promise.all(
    Array.from({ length: 40 }, (_, i) => passwordRaw(i % 2 ? a : b, email, 'wrong-password-1')),
  );
  const checked = results.filter((r) => r.status === 400).length;
  assert.equal(checked + results.filter((r) => r.status === 429).length, 40);
  assert.equal(checked, 4, results.map((r) => r.status).join(','));
});

test('/v1/identify counts toward the lockout of the identity it checks', async () => {
  const s = await start({ PASSWORD_LOCKOUT_ATTEMPTS: '2', PASSWORD_LOCKOUT_WINDOW: '1h' });
  const keys = await setupKeys(s);
  const people = await createCollection(keys.admin, uniqueName('people'));
  const doc = await createDoc(keys.admin, people, { data: { name: 'ann' }, credentials: { password: 'right-password-1' } });
  const body = (password) => ({ collection: people, id: doc.id, password });
  for (let i = 0; i < 2; i++) {
    const r = expect(await keys.server.post('/v1/identify', body('wrong-password-1')), 200);
    assert.equal(r.valid, false);
  }
  assertTooMany(await keys.server.post('/v1/identify', body('right-password-1')), 'v1');
  assertTooMany(await v1(s, 'POST', '/v1/login', { body: body('right-password-1') }), 'v1');
});

test('per-key limit: password checks made with one key are limited, another key is not', async () => {
  const s = await start({ RATE_LIMIT_KEY: '3/1h,3' });
  const keys = await setupKeys(s);
  const people = await createCollection(keys.admin, uniqueName('people'));
  const doc = await createDoc(keys.admin, people, { data: {}, credentials: { password: 'right-password-1' } });
  const body = { collection: people, id: doc.id, password: 'right-password-1' };
  expect(await keys.server.post('/v1/identify', body), 200);
  expect(await keys.server.post('/v1/login', body), 200);
  expect(await keys.server.post('/v1/identify', body), 200);
  assertTooMany(await keys.server.post('/v1/login', body), 'v1');
  assertTooMany(await keys.server.post('/v1/identify', body), 'v1');
  expect(await keys.admin.post('/v1/identify', body), 200);
  // minting is not a password check: a server key keeps minting
  expect(await keys.server.post('/v1/tokens', { identity: { collection: people, id: doc.id } }), 201);
});

test('profile budgets: rate_limit per identity per second, null inherits, 0 is unlimited, logout exempt', async () => {
  const s = await start({ RATE_LIMIT_PROFILE_DEFAULT: '3' });
  const keys = await setupKeys(s);
  const people = await createCollection(keys.admin, uniqueName('people'));
  const mkProfile = async (name, rate) =>
    expect(await keys.admin.post('/v1/profiles', { name, policies: [{ role: 'default' }], rate_limit: rate }), 201);
  const fast = uniqueName('fast');
  const inherit = uniqueName('inherit');
  const free = uniqueName('free');
  await mkProfile(fast, 50);
  await mkProfile(inherit, null);
  await mkProfile(free, 0);
  const tokenFor = async (profiles) => {
    const doc = await createDoc(keys.admin, people, { data: { profiles } });
    const t = expect(await keys.admin.post('/v1/tokens', { identity: { collection: people, id: doc.id } }), 201).token;
    return caller(s, t.secret);
  };
  const burst = async (who, n) => {
    const rs = await Promise.all(Array.from({ length: n }, () => who.get('/v1/me')));
    return rs;
  };
  // no profile: the server default (3 per second), on every route (documents too)
  const plain = await tokenFor([]);
  let rs = await burst(plain, 12);
  const limited = rs.filter((r) => r.status === 429);
  assert.ok(limited.length >= 6, `default budget: ${rs.map((r) => r.status)}`);
  assertTooMany(limited[0], 'v1');
  await new Promise((r) => setTimeout(r, 1100));
  const docs = await Promise.all(Array.from({ length: 12 }, () => plain.get(`/v1/collections/${people}/documents?size=1`)));
  assert.ok(docs.filter((r) => r.status === 429).length >= 6, `documents: ${docs.map((r) => r.status)}`);
  // an unset rate_limit inherits the same default, even beside an unlimited-by-omission profile
  rs = await burst(await tokenFor([inherit]), 12);
  assert.ok(rs.filter((r) => r.status === 429).length >= 6, `inherit: ${rs.map((r) => r.status)}`);
  // the most permissive profile wins: 50 per second, and 0 lifts the cap
  rs = await burst(await tokenFor([inherit, fast]), 12);
  assert.ok(rs.every((r) => r.status === 200), `fast: ${rs.map((r) => r.status)}`);
  rs = await burst(await tokenFor([free]), 40);
  assert.ok(rs.every((r) => r.status === 200), `free: ${rs.map((r) => r.status)}`);
  // over budget, logout still works
  await burst(plain, 10);
  expect(await plain.post('/v1/logout', {}), 200);
});
