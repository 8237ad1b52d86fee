// Native API (/v1): login, identify, logout, and the checks of a presented secret — the
// uniform 401, token and identity expiry, deleted and re-created identities, token TTL rules.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SignJWT, generateKeyPair } from 'jose';
import { startServer, finish, test, sleep, trackedFetch } from '../lib/server.mjs';
import {
  v1,
  caller,
  setupKeys,
  createCollection,
  createDoc,
  uniqueName,
  expect,
  assertV1Error,
  assertUnauthorized,
  assertForbidden,
  assertInvalidCredentials,
  assertNear,
  timeMs,
  login,
  UUID_RE,
  TST_RE,
} from '../lib/v1.mjs';

let server;
let small; // TOKEN_DEFAULT_TTL=10m, TOKEN_MAX_TTL=1h
let keys;
let admin;
let coll;
const PW = 'correct horse battery';

before(async () => {
  server = await startServer({});
  small = await startServer({ TOKEN_DEFAULT_TTL: '10m', TOKEN_MAX_TTL: '1h' });
  keys = await setupKeys(server);
  admin = keys.admin;
  coll = await createCollection(admin, uniqueName('accounts'));
  expect(await admin.post(`/v1/collections/${coll}/indexes`, { name: 'by_email', terms: ['data.email'], unique: true }), 201);
});

after(async () => {
  await finish(server, small);
});

const docs = (c = coll) => `/v1/collections/${c}/documents`;
const me = (secret, s = server) => v1(s, 'GET', '/v1/me', { as: secret });

/** A document with a password; returns {id, email, doc}. */
async function account(extra = {}, s = server, a = admin, c = coll) {
  const id = uniqueName('acct');
  const email = `${id}@example.com`;
  const doc = await createDoc(a, c, { id, data: { email, name: id }, credentials: { password: PW }, ...extra });
  return { id, email, doc };
}

test('login by id: 200 {token} with a tst_ secret, default TTL of 30 days; the token works on /v1/me', async () => {
  const a = await account();
  const t0 = Date.now();
  const res = await v1(server, 'POST', '/v1/login', { body: { collection: coll, id: a.id, password: PW } });
  const { token } = expect(res, 200);
  assert.deepEqual(Object.keys(res.body), ['token']);
  assert.match(token.id, UUID_RE);
  assert.match(token.secret, TST_RE);
  assert.deepEqual(token.identity, { collection: coll, id: a.id });
  assert.equal(token.origin, 'login');
  assertNear(token.created_at, t0, 60000, 'created_at');
  assertNear(token.expires_at, t0 + 30 * 86400e3, 120000, 'expires_at (TOKEN_DEFAULT_TTL 720h)');

  const m = expect(await me(token.secret), 200);
  assert.deepEqual(m.identity, { collection: coll, id: a.id });
  assert.deepEqual(m.document, a.doc);
  assert.equal(m.credential.kind, 'token');
  assert.equal(m.credential.id, token.id);
  assert.equal(m.credential.expires_at, token.expires_at);

  // The secret also works from the apikey header when there is no Authorization.
  const viaApikey = await v1(server, 'GET', '/v1/me', { apikey: token.secret });
  assert.deepEqual(expect(viaApikey, 200).identity, m.identity);

  // "strategy":"password" may be given; two logins give two different tokens.
  const t2 = await login(server, { strategy: 'password', collection: coll, id: a.id, password: PW });
  assert.notEqual(t2.secret, token.secret);
  assert.notEqual(t2.id, token.id);
});

test('login by index and term', async () => {
  const a = await account();
  const t = await login(server, { collection: coll, index: 'by_email', term: a.email, password: PW });
  assert.deepEqual(t.identity, { collection: coll, id: a.id });
  expect(await me(t.secret), 200);
  // data and ttl travel with the token.
  const t0 = Date.now();
  const t2 = await login(server, { collection: coll, index: 'by_email', term: a.email, password: PW, ttl: '1h', data: { device: 'phone', n: 2 } });
  assert.deepEqual(t2.data, { device: 'phone', n: 2 });
  assertNear(t2.expires_at, t0 + 3600e3, 60000, 'expires_at');
  const got = expect(await admin.get(`/v1/tokens/${t2.id}`), 200);
  assert.deepEqual(got.data, { device: 'phone', n: 2 });
});

test('every failed login gets the same 400 invalid_credentials body', async () => {
  const a = await account();
  const noPassword = uniqueName('nopw');
  await createDoc(admin, coll, { id: noPassword, data: { email: `${noPassword}@example.com` } });
  const other = await createCollection(admin);
  const attempts = [
    { collection: coll, id: a.id, password: 'wrong password' },
    { collection: coll, id: a.id, password: '' },
    { collection: coll, id: a.id, password: PW.toUpperCase() },
    { collection: coll, index: 'by_email', term: a.email, password: 'wrong password' },
    { collection: coll, id: 'nobody-at-all', password: PW },
    { collection: coll, index: 'by_email', term: 'nobody@example.com', password: PW },
    { collection: other, id: a.id, password: PW },
    { collection: uniqueName('nosuchcoll'), id: a.id, password: PW },
    { collection: coll, id: noPassword, password: PW },
    { collection: coll, index: 'by_email', term: `${noPassword}@example.com`, password: PW },
  ];
  for (const body of attempts) {
    assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body }));
    const id = await v1(server, 'POST', '/v1/identify', { body });
    assert.deepEqual(expect(id, 200), { valid: false }, JSON.stringify(body));
  }
  // The right password still works afterwards.
  await login(server, { collection: coll, id: a.id, password: PW });
});

test('malformed login bodies → 400 invalid_request', async () => {
  const a = await account();
  const bad = [
    { collection: coll, id: a.id },
    { collection: coll, id: a.id, password: 5 },
    { id: a.id, password: PW },
    { collection: coll, password: PW },
    { collection: coll, index: 'by_email', password: PW },
    { collection: coll, id: a.id, password: PW, extra: 1 },
    { collection: coll, id: a.id, password: PW, strategy: 'oauth' },
    { collection: coll, id: a.id, password: PW, ttl: '30d' },
    { collection: coll, id: a.id, password: PW, ttl: -1 },
    { collection: coll, id: a.id, password: PW, data: 'x' },
  ];
  for (const body of bad) assertV1Error(await v1(server, 'POST', '/v1/login', { body }), 400, 'invalid_request');
  assertV1Error(await v1(server, 'POST', '/v1/login', { rawBody: '{"collection":' }), 400, 'invalid_request');
  // identify takes no ttl or data
  assertV1Error(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: a.id, password: PW, ttl: 60 } }), 400, 'invalid_request');
  assertV1Error(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: a.id, password: PW, data: {} } }), 400, 'invalid_request');
});

test('JSON bodies are read whatever the Content-Type (curl -d sends a form type, as in the examples)', async () => {
  const a = await account();
  const body = JSON.stringify({ collection: coll, id: a.id, password: PW });
  for (const type of ['application/x-www-form-urlencoded', 'text/plain', undefined]) {
    const headers = type ? { 'Content-Type': type } : {};
    const res = await trackedFetch(`${server.url}/v1/login`, { method: 'POST', headers, body });
    const text = await res.text();
    assert.equal(res.status, 200, `Content-Type ${type}: ${res.status} ${text}`);
    assert.match(JSON.parse(text).token.secret, TST_RE);
  }
});

test('identify answers {valid} and creates no token', async () => {
  const a = await account();
  const list = `/v1/tokens?collection=${coll}&identity=${a.id}`;
  const before = expect(await admin.get(list), 200).data;
  assert.deepEqual(before, []);
  assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: a.id, password: PW } }), 200), { valid: true });
  assert.deepEqual(
    expect(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, index: 'by_email', term: a.email, password: PW, strategy: 'password' } }), 200),
    { valid: true },
  );
  assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: a.id, password: 'nope nope' } }), 200), { valid: false });
  assert.deepEqual(expect(await admin.get(list), 200).data, [], 'identify created a token');
  const ledger = expect(await admin.get(`/v1/identities/${a.id}/sessions?collection=${coll}`), 200);
  assert.deepEqual(ledger.tokens, []);
});

test('a presented secret that fails any check: the same 401 with WWW-Authenticate: Bearer', async () => {
  const { privateKey } = await generateKeyPair('ES256');
  const foreign = await new SignJWT({ role: 'service_role' })
    .setProtectedHeader({ alg: 'ES256', kid: 'foreign' })
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(privateKey);
  const hs = await new SignJWT({ role: 'service_role' })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(randomBytes(32));
  const sk = server.serviceKey;
  const tampered = sk.slice(0, -3) + (sk.endsWith('AAA') ? 'BBB' : 'AAA');
  const secrets = [
    `tst_${randomBytes(24).toString('base64url')}`,
    `tsk_${randomBytes(24).toString('base64url')}`,
    'tst_short',
    'tsk_',
    'garbage',
    foreign,
    hs,
    tampered,
    `${keys.admin.secret}x`,
    keys.admin.secret.slice(0, -1),
  ];
  for (const s of secrets) {
    assertUnauthorized(await me(s));
    assertUnauthorized(await v1(server, 'GET', '/v1/collections', { as: s }));
    assertUnauthorized(await v1(server, 'GET', '/v1/me', { apikey: s }));
  }
  // A failing Authorization is not rescued by a good apikey; a good one is not spoiled by a bad apikey.
  assertUnauthorized(await v1(server, 'GET', '/v1/me', { as: secrets[0], apikey: keys.admin.secret }));
  expect(await v1(server, 'GET', '/v1/me', { as: keys.admin.secret, apikey: secrets[0] }), 200);
  // Even login refuses a bad presented secret rather than treating it as anonymous.
  const a = await account();
  assertUnauthorized(await v1(server, 'POST', '/v1/login', { as: secrets[0], body: { collection: coll, id: a.id, password: PW } }));
});

test('expiry: a token past its ttl, a token of an expired identity and an expired key all get the 401', async () => {
  const lasting = await account();
  const mortal = await account({ ttl: 2 });
  const tShort = await login(server, { collection: coll, id: lasting.id, password: PW, ttl: 2 });
  const tLong = await login(server, { collection: coll, id: lasting.id, password: PW });
  const tMortal = await login(server, { collection: coll, id: mortal.id, password: PW });
  const kShort = expect(await admin.post('/v1/keys', { role: 'server', ttl: 2 }), 201).key;
  const now = Date.now();
  assertNear(tShort.expires_at, now + 2000, 5000, 'token expires_at');
  assertNear(kShort.expires_at, now + 2000, 5000, 'key expires_at');
  for (const s of [tShort.secret, tLong.secret, tMortal.secret, kShort.secret]) expect(await me(s), 200);

  const latest = Math.max(timeMs(tShort.expires_at), timeMs(kShort.expires_at), timeMs(mortal.doc.ttl));
  await sleep(Math.max(0, latest - Date.now()) + 500);

  const mark = server.logCount();
  assertUnauthorized(await me(tShort.secret));
  assertUnauthorized(await me(tMortal.secret));
  assertUnauthorized(await me(kShort.secret));
  assertUnauthorized(await v1(server, 'GET', '/v1/collections', { as: kShort.secret }));
  // The answer is uniform; the precise reason goes to the log.
  const refusals = server.logsSince(mark).filter((l) => /refused/i.test(l));
  assert.ok(refusals.some((l) => /expired/i.test(l)), `no logged reason for the refusals:\n${refusals.join('\n')}`);
  expect(await me(tLong.secret), 200);
  // Expired secrets are absent everywhere.
  assertV1Error(await admin.get(`/v1/tokens/${tShort.id}`), 404, 'not_found');
  assertV1Error(await admin.get(`/v1/keys/${kShort.id}`), 404, 'not_found');
  const listed = expect(await admin.get(`/v1/tokens?collection=${coll}&identity=${lasting.id}`), 200).data.map((t) => t.id);
  assert.deepEqual(listed, [tLong.id]);
  // The expired identity cannot log in...
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: coll, id: mortal.id, password: PW } }));
  // ...and re-created with the same id and password, it gets new tokens; the old one stays dead.
  await createDoc(admin, coll, { id: mortal.id, data: { again: true }, credentials: { password: PW } });
  const fresh = await login(server, { collection: coll, id: mortal.id, password: PW });
  expect(await me(fresh.secret), 200);
  assertUnauthorized(await me(tMortal.secret));
});

test('a deleted identity\'s tokens get the 401; a re-created id starts with nothing', async () => {
  const a = await account();
  const t1 = await login(server, { collection: coll, id: a.id, password: PW });
  const t2 = expect(await admin.post('/v1/tokens', { identity: { collection: coll, id: a.id } }), 201).token;
  const bound = expect(await admin.post('/v1/keys', { role: 'server', identity: { collection: coll, id: a.id } }), 201).key;
  for (const s of [t1.secret, t2.secret, bound.secret]) expect(await me(s), 200);

  expect(await admin.del(`${docs()}/${a.id}`), 204);
  for (const s of [t1.secret, t2.secret, bound.secret]) assertUnauthorized(await me(s));
  assertV1Error(await admin.get(`/v1/tokens/${t1.id}`), 404, 'not_found');
  assertV1Error(await admin.get(`/v1/keys/${bound.id}`), 404, 'not_found');

  // Re-created without credentials: the old password is gone with the old document.
  await createDoc(admin, coll, { id: a.id, data: { email: a.email } });
  for (const s of [t1.secret, t2.secret, bound.secret]) assertUnauthorized(await me(s));
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: coll, id: a.id, password: PW } }));
  // With a password again, it logs in with a new token only.
  expect(await admin.patch(`${docs()}/${a.id}`, { credentials: { password: 'another password' } }), 200);
  const t3 = await login(server, { collection: coll, id: a.id, password: 'another password' });
  assert.deepEqual(expect(await me(t3.secret), 200).identity, { collection: coll, id: a.id });
  assertUnauthorized(await me(t1.secret));

  // Deleting the whole collection does the same for its documents' tokens, keys and credentials.
  const c2 = await createCollection(admin);
  const b = await account({}, server, admin, c2);
  const tb = await login(server, { collection: c2, id: b.id, password: PW });
  const kb = expect(await admin.post('/v1/keys', { role: 'server', identity: { collection: c2, id: b.id } }), 201).key;
  expect(await me(tb.secret), 200);
  expect(await me(kb.secret), 200);
  expect(await admin.del(`/v1/collections/${c2}`), 204);
  assertUnauthorized(await me(tb.secret));
  assertUnauthorized(await me(kb.secret));
  await createCollection(admin, c2);
  await createDoc(admin, c2, { id: b.id, data: {} });
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: c2, id: b.id, password: PW } }));
  assertUnauthorized(await me(tb.secret));
  assertUnauthorized(await me(kb.secret));
});

test('logout: all:false deletes the caller\'s token only; all:true every token of the identity; keys untouched', async () => {
  const a = await account();
  const t1 = await login(server, { collection: coll, id: a.id, password: PW });
  const t2 = await login(server, { collection: coll, id: a.id, password: PW });
  const bound = expect(await admin.post('/v1/keys', { role: 'server-readonly', identity: { collection: coll, id: a.id } }), 201).key;

  const out1 = await v1(server, 'POST', '/v1/logout', { as: t1.secret, body: { all: false } });
  assert.deepEqual(expect(out1, 200), { logged_out: true, revoked: 1 });
  assertUnauthorized(await me(t1.secret));
  expect(await me(t2.secret), 200);
  expect(await me(bound.secret), 200);

  const t3 = await login(server, { collection: coll, id: a.id, password: PW });
  const other = await account();
  const tOther = await login(server, { collection: coll, id: other.id, password: PW });
  const out2 = await v1(server, 'POST', '/v1/logout', { as: t2.secret, body: { all: true } });
  assert.deepEqual(expect(out2, 200), { logged_out: true, revoked: 2 });
  assertUnauthorized(await me(t2.secret));
  assertUnauthorized(await me(t3.secret));
  expect(await me(bound.secret), 200, 'a key bound to the identity survives all:true');
  expect(await me(tOther.secret), 200, 'another identity\'s token survives');

  // A key caller logs nothing out.
  const out3 = await v1(server, 'POST', '/v1/logout', { as: bound.secret, body: { all: true } });
  assert.deepEqual(expect(out3, 200), { logged_out: false, revoked: 0 });
  const out4 = await v1(server, 'POST', '/v1/logout', { as: keys.server.secret, body: { all: false } });
  assert.deepEqual(expect(out4, 200), { logged_out: false, revoked: 0 });
  expect(await me(bound.secret), 200);
  expect(await me(keys.server.secret), 200);
  expect(await me(tOther.secret), 200);

  // A logged-out token cannot log out again; anonymous cannot log out.
  assertUnauthorized(await v1(server, 'POST', '/v1/logout', { as: t1.secret, body: { all: false } }));
  assertUnauthorized(await v1(server, 'POST', '/v1/logout', { body: { all: false } }));
  assertUnauthorized(await v1(server, 'POST', '/v1/logout', { as: server.anonKey, body: { all: false } }));
  assertV1Error(await v1(server, 'POST', '/v1/logout', { as: tOther.secret, body: { all: 'yes' } }), 400, 'invalid_request');
  expect(await me(tOther.secret), 200);
});

test('token TTL: beyond TOKEN_MAX_TTL (90 days) → 400; up to it is fine', async () => {
  const a = await account();
  const base = { collection: coll, id: a.id, password: PW };
  for (const ttl of [91 * 86400, '2161h', '2999-01-01T00:00:00Z', new Date(Date.now() + 91 * 86400e3).toISOString()]) {
    assertV1Error(await v1(server, 'POST', '/v1/login', { body: { ...base, ttl } }), 400, 'invalid_request');
    assertV1Error(await admin.post('/v1/tokens', { identity: { collection: coll, id: a.id }, ttl }), 400, 'invalid_request');
  }
  const t0 = Date.now();
  const max = await login(server, { ...base, ttl: '2160h' });
  assertNear(max.expires_at, t0 + 90 * 86400e3, 60000, 'expires_at');
  const viaAdmin = expect(await admin.post('/v1/tokens', { identity: { collection: coll, id: a.id }, ttl: 89 * 86400 }), 201).token;
  assertNear(viaAdmin.expires_at, t0 + 89 * 86400e3, 60000, 'expires_at');
  const dflt = expect(await admin.post('/v1/tokens', { identity: { collection: coll, id: a.id } }), 201).token;
  assertNear(dflt.expires_at, t0 + 30 * 86400e3, 60000, 'default expires_at');
  // An absolute time within the limit.
  const at = new Date(Date.now() + 86400e3).toISOString();
  const abs = await login(server, { ...base, ttl: at });
  assertNear(abs.expires_at, Date.parse(at), 1000, 'expires_at');
});

test('TOKEN_DEFAULT_TTL and TOKEN_MAX_TTL are honoured when set', async () => {
  const k = await setupKeys(small);
  const c = await createCollection(k.admin);
  const a = await account({}, small, k.admin, c);
  const t0 = Date.now();
  const t = await login(small, { collection: c, id: a.id, password: PW });
  assertNear(t.expires_at, t0 + 600e3, 30000, 'default 10m');
  const t2 = expect(await k.admin.post('/v1/tokens', { identity: { collection: c, id: a.id } }), 201).token;
  assertNear(t2.expires_at, t0 + 600e3, 30000, 'default 10m');
  assertV1Error(await v1(small, 'POST', '/v1/login', { body: { collection: c, id: a.id, password: PW, ttl: '2h' } }), 400, 'invalid_request');
  assertV1Error(await k.admin.post('/v1/tokens', { identity: { collection: c, id: a.id }, ttl: 3601 }), 400, 'invalid_request');
  const t3 = await login(small, { collection: c, id: a.id, password: PW, ttl: 3600 });
  assertNear(t3.expires_at, t0 + 3600e3, 30000, 'max 1h');
  // Keys are not tokens: no maximum.
  const key = expect(await k.admin.post('/v1/keys', { role: 'server', ttl: '720h' }), 201).key;
  assertNear(key.expires_at, t0 + 720 * 3600e3, 30000, 'key expires_at');
  const forever = expect(await k.admin.post('/v1/keys', { role: 'server' }), 201).key;
  assert.ok(forever.expires_at == null, 'a key without ttl never expires');
});

test('the argon2id work is done whether or not the identity exists (no shortcut for unknown ones)', async () => {
  const slow = await startServer({ PASSWORD_HASH_MEMORY_KIB: '32768', PASSWORD_HASH_ITERATIONS: '3' });
  try {
    const k = await setupKeys(slow);
    const c = await createCollection(k.admin);
    const a = await account({}, slow, k.admin, c);
    const np = uniqueName('nopw');
    await createDoc(k.admin, c, { id: np, data: {} });
    const time = async (body) => {
      const samples = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        assertInvalidCredentials(await v1(slow, 'POST', '/v1/login', { body }));
        samples.push(performance.now() - t);
      }
      samples.sort((x, y) => x - y);
      return samples[2];
    };
    const wrong = await time({ collection: c, id: a.id, password: 'wrong password' });
    const unknown = await time({ collection: c, id: 'nobody', password: 'wrong password' });
    const nocred = await time({ collection: c, id: np, password: 'wrong password' });
    const nocoll = await time({ collection: uniqueName('none'), id: 'x', password: 'wrong password' });
    assert.ok(wrong >= 5, `a wrong password took ${wrong.toFixed(1)} ms: the hash is too cheap to compare`);
    for (const [what, ms] of [['unknown id', unknown], ['no password', nocred], ['unknown collection', nocoll]]) {
      assert.ok(ms >= wrong * 0.4, `${what}: ${ms.toFixed(1)} ms vs ${wrong.toFixed(1)} ms for a wrong password`);
    }
  } finally {
    const info = await slow.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});

test('a full hash pool: /v1/login answers 429 too_many_requests with Retry-After, and drains', async () => {
  // Default argon2 parameters, one worker, one waiting slot (as hash-pool.test.mjs).
  const busy = await startServer({
    PASSWORD_HASH_WORKERS: '1',
    PASSWORD_HASH_QUEUE: '1',
    PASSWORD_HASH_MEMORY_KIB: null,
    PASSWORD_HASH_ITERATIONS: null,
  });
  try {
    const k = await setupKeys(busy);
    const c = await createCollection(k.admin);
    const a = await account({}, busy, k.admin, c);
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        v1(busy, 'POST', '/v1/login', { body: { collection: c, id: a.id, password: i % 2 ? 'wrong password' : PW } }).then((r) => ({ i, r })),
      ),
    );
    const counts = {};
    for (const { i, r } of results) {
      counts[r.status] = (counts[r.status] ?? 0) + 1;
      if (r.status === 429) {
        assertV1Error(r, 429, 'too_many_requests');
        assert.match(r.headers.get('retry-after') ?? '', /^\d+$/, 'Retry-After');
      } else if (r.status === 200) {
        assert.equal(i % 2, 0, `a wrong password got 200: ${r.text}`);
      } else {
        assert.equal(i % 2, 1, `request ${i}: ${r.status} ${r.text}`);
        assertInvalidCredentials(r);
      }
    }
    assert.ok((counts[429] ?? 0) >= 1, `expected some 429s: ${JSON.stringify(counts)}`);
    await login(busy, { collection: c, id: a.id, password: PW });
  } finally {
    const info = await busy.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});
