// Native API (/v1): tokens and keys (create, list, get, revoke; secrets shown once), what each
// kind of caller may do, keys from the command line, and revocation across nodes.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { PG, startServer, finish, test } from '../lib/server.mjs';
import {
  v1,
  caller,
  setupKeys,
  bootstrapKey,
  createCollection,
  createDoc,
  uniqueName,
  expect,
  assertV1Error,
  assertUnauthorized,
  assertForbidden,
  assertNear,
  login,
  listAll,
  cli,
  eventually,
  dbQuery,
  UUID_RE,
  TST_RE,
  TSK_RE,
} from '../lib/v1.mjs';

let server;
let keys;
let admin;
let coll;
const PW = 'correct horse battery';

before(async () => {
  server = await startServer({});
  keys = await setupKeys(server);
  admin = keys.admin;
  coll = await createCollection(admin, uniqueName('people'));
  expect(await admin.post(`/v1/collections/${coll}/indexes`, { name: 'by_email', terms: ['data.email'] }), 201);
});

after(async () => {
  await finish(server);
});

const docs = (c = coll) => `/v1/collections/${c}/documents`;
const me = (secret) => v1(server, 'GET', '/v1/me', { as: secret });

async function person(a = admin) {
  const id = uniqueName('p');
  await createDoc(a, coll, { id, data: { email: `${id}@example.com` }, credentials: { password: PW } });
  return id;
}

test('the bootstrap service_role JWT is an admin: it makes tsk_ keys of every role', async () => {
  const jwtMe = expect(await me(server.serviceKey), 200);
  assert.equal(jwtMe.identity, null);
  assert.equal(jwtMe.credential.kind, 'jwt');
  const t0 = Date.now();
  for (const role of ['admin', 'server', 'server-readonly', 'client']) {
    const res = await v1(server, 'POST', '/v1/keys', { as: server.serviceKey, body: { role, description: `a ${role} key`, data: { team: 'ops' } } });
    const { key } = expect(res, 201);
    assert.deepEqual(Object.keys(res.body), ['key']);
    assert.match(key.id, UUID_RE);
    assert.equal(key.role, role);
    assert.equal(key.description, `a ${role} key`);
    assert.deepEqual(key.data, { team: 'ops' });
    assert.equal(typeof key.origin, 'string');
    assertNear(key.created_at, t0, 60000, 'created_at');
    assert.ok(key.expires_at == null, 'no ttl: never expires');
    assert.match(key.secret, TSK_RE, 'tsk_ and 32 base64url characters');
    // Shown once: never again.
    const got = expect(await admin.get(`/v1/keys/${key.id}`), 200);
    assert.equal(got.secret, undefined);
    const { secret, ...rest } = key;
    assert.deepEqual(got, rest);
    // Accepted as Bearer and as apikey (identify is open to every caller; a bad secret gets 401).
    const probe = { collection: coll, id: 'nobody', password: 'x' };
    assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { as: key.secret, body: probe }), 200), { valid: false });
    assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { apikey: key.secret, body: probe }), 200), { valid: false });
    if (role !== 'client') {
      const viaBearer = expect(await me(key.secret), 200);
      assert.equal(viaBearer.identity, null);
      assert.equal(viaBearer.document, null);
      assert.equal(viaBearer.credential.kind, 'key');
      assert.equal(viaBearer.credential.id, key.id);
      assert.equal(viaBearer.credential.role, role);
      assert.deepEqual(expect(await v1(server, 'GET', '/v1/me', { apikey: key.secret }), 200), viaBearer);
    } else {
      // A client key may only log in: /v1/me is refused, however it is presented.
      assertForbidden(await me(key.secret));
      assertForbidden(await v1(server, 'GET', '/v1/me', { apikey: key.secret }));
    }
  }
});

test('secrets differ; bad key bodies → 400; /v1/me of a client key is refused', async () => {
  const a = await bootstrapKey(server, 'server');
  const b = await bootstrapKey(server, 'server');
  assert.notEqual(a.secret, b.secret);
  assert.notEqual(a.id, b.id);
  for (const body of [
    {},
    { role: 'root' },
    { role: 'anon' },
    { role: 5 },
    { role: 'server', extra: 1 },
    { role: 'server', ttl: '30d' },
    { role: 'server', ttl: 0 },
    { role: 'server', ttl: '2001-01-01T00:00:00Z' },
    { role: 'server', description: 5 },
    { role: 'server', data: 'x' },
    { role: 'server', identity: 'x' },
    { role: 'server', identity: { collection: coll } },
  ]) {
    assertV1Error(await admin.post('/v1/keys', body), 400, 'invalid_request');
  }
  // A key bound to an identity that is not live: 404.
  assertV1Error(await admin.post('/v1/keys', { role: 'server', identity: { collection: coll, id: 'nobody' } }), 404, 'not_found');
  assertForbidden(await me(keys.client.secret));
});

test('keys: list (pages by id, never a secret), get, revoke → 401 on the next use', async () => {
  const made = [];
  for (let i = 0; i < 5; i++) made.push(expect(await admin.post('/v1/keys', { role: 'server-readonly', description: `k${i}` }), 201).key);
  const { items } = await listAll(admin, '/v1/keys', 2);
  const listedIds = items.map((k) => k.id);
  assert.equal(new Set(listedIds).size, listedIds.length, 'no duplicates');
  assert.deepEqual(listedIds, [...listedIds].sort(), 'by id');
  for (const k of made) assert.ok(listedIds.includes(k.id), `key ${k.id} listed`);
  const text = JSON.stringify(items);
  assert.ok(!/tsk_/.test(text), 'a list shows no secret');
  for (const k of items) assert.equal(k.secret, undefined);

  const victim = made[0];
  expect(await me(victim.secret), 200);
  const del = await admin.del(`/v1/keys/${victim.id}`);
  expect(del, 204);
  assertUnauthorized(await me(victim.secret));
  assertUnauthorized(await v1(server, 'GET', '/v1/me', { apikey: victim.secret }));
  assertV1Error(await admin.get(`/v1/keys/${victim.id}`), 404, 'not_found');
  assertV1Error(await admin.del(`/v1/keys/${victim.id}`), 404, 'not_found');
  assert.ok(!expect(await admin.get('/v1/keys?size=1000'), 200).data.some((k) => k.id === victim.id));
  expect(await me(made[1].secret), 200, 'other keys keep working');

  // An admin key can revoke another admin key, and itself.
  const a2 = caller(server, (await bootstrapKey(server, 'admin')).secret);
  const a2id = expect(await v1(server, 'GET', '/v1/me', { as: a2.secret }), 200).credential.id;
  expect(await a2.del(`/v1/keys/${a2id}`), 204);
  assertUnauthorized(await a2.get('/v1/keys'));
});

test('a key bound to an identity acts as it on /v1/me', async () => {
  const id = await person();
  const k = expect(await admin.post('/v1/keys', { role: 'server', identity: { collection: coll, id } }), 201).key;
  assert.deepEqual(k.identity, { collection: coll, id });
  const m = expect(await me(k.secret), 200);
  assert.deepEqual(m.identity, { collection: coll, id });
  assert.equal(m.document.id, id);
  assert.equal(m.credential.kind, 'key');
  assert.equal(m.credential.role, 'server');
});

test('tokens: POST /v1/tokens (admin, server) → 201 origin admin; 403 for readonly and client; 401 for anonymous', async () => {
  const id = await person();
  const t0 = Date.now();
  const res = await keys.server.post('/v1/tokens', { identity: { collection: coll, id }, data: { purpose: 'job' } });
  const { token } = expect(res, 201);
  assert.deepEqual(Object.keys(res.body), ['token']);
  assert.match(token.id, UUID_RE);
  assert.match(token.secret, TST_RE);
  assert.equal(token.origin, 'admin');
  assert.deepEqual(token.identity, { collection: coll, id });
  assert.deepEqual(token.data, { purpose: 'job' });
  assertNear(token.created_at, t0, 60000, 'created_at');
  assertNear(token.expires_at, t0 + 30 * 86400e3, 120000, 'expires_at');
  assert.deepEqual(expect(await me(token.secret), 200).identity, { collection: coll, id });
  expect(await admin.post('/v1/tokens', { identity: { collection: coll, id } }), 201);

  const body = { identity: { collection: coll, id } };
  assertForbidden(await keys.readonly.post('/v1/tokens', body));
  assertForbidden(await keys.client.post('/v1/tokens', body));
  assertUnauthorized(await v1(server, 'POST', '/v1/tokens', { as: server.anonKey, body }));
  assertUnauthorized(await v1(server, 'POST', '/v1/tokens', { body }));
  const tok = caller(server, token.secret);
  assertForbidden(await tok.post('/v1/tokens', body));

  // Not a live identity: 404. Bad bodies: 400.
  assertV1Error(await admin.post('/v1/tokens', { identity: { collection: coll, id: 'nobody' } }), 404, 'not_found');
  assertV1Error(await admin.post('/v1/tokens', { identity: { collection: uniqueName('none'), id } }), 404, 'not_found');
  assertV1Error(await admin.post('/v1/tokens', { identity: { collection: 'users', id: '00000000-0000-4000-8000-000000000000' } }), 404, 'not_found');
  for (const b of [{}, { identity: 'x' }, { identity: { collection: coll } }, { identity: { collection: coll, id }, extra: 1 }, { identity: { collection: coll, id }, ttl: 'x' }, { identity: { collection: coll, id }, data: [] }]) {
    assertV1Error(await admin.post('/v1/tokens', b), 400, 'invalid_request');
  }
});

test('tokens: list by identity (pages by id, never a secret), get, revoke by id → 401 on the next use', async () => {
  const id = await person();
  const made = [];
  for (let i = 0; i < 3; i++) made.push(expect(await keys.server.post('/v1/tokens', { identity: { collection: coll, id } }), 201).token);
  made.push(await login(server, { collection: coll, id, password: PW }));
  const other = await person();
  const otherTok = await login(server, { collection: coll, id: other, password: PW });

  const path = `/v1/tokens?collection=${coll}&identity=${id}`;
  for (const who of [admin, keys.server, keys.readonly]) {
    const { items } = await listAll(who, path, 3);
    assert.deepEqual(items.map((t) => t.id), made.map((t) => t.id).sort(), 'exactly the identity\'s tokens, by id');
    assert.ok(!JSON.stringify(items).includes('tst_'), 'no secret in a list');
    for (const t of items) {
      assert.deepEqual(t.identity, { collection: coll, id });
      assert.ok(['admin', 'login'].includes(t.origin));
    }
    const one = expect(await who.get(`/v1/tokens/${made[0].id}`), 200);
    const { secret, ...rest } = made[0];
    assert.deepEqual(one, rest);
  }
  const all = await listAll(admin, '/v1/tokens', 1000);
  assert.ok(all.items.some((t) => t.id === otherTok.id));
  assert.ok(!JSON.stringify(all.items).includes('tst_'));

  assertForbidden(await keys.readonly.del(`/v1/tokens/${made[0].id}`));
  expect(await me(made[0].secret), 200);
  expect(await keys.server.del(`/v1/tokens/${made[0].id}`), 204);
  assertUnauthorized(await me(made[0].secret));
  assertV1Error(await admin.get(`/v1/tokens/${made[0].id}`), 404, 'not_found');
  assertV1Error(await admin.del(`/v1/tokens/${made[0].id}`), 404, 'not_found');
  expect(await admin.del(`/v1/tokens/${made[3].id}`), 204);
  assertUnauthorized(await me(made[3].secret));
  expect(await me(made[1].secret), 200);
  expect(await me(otherTok.secret), 200);
  const left = expect(await admin.get(path), 200).data.map((t) => t.id);
  assert.deepEqual(left, [made[1].id, made[2].id].sort());
  // A key id is not a token id.
  assertV1Error(await admin.get(`/v1/tokens/${keys.server.key.id}`), 404, 'not_found');
  assertV1Error(await admin.get(`/v1/keys/${made[1].id}`), 404, 'not_found');
  assertV1Error(await admin.get('/v1/tokens/00000000-0000-4000-8000-000000000000'), 404, 'not_found');
});

test('what each caller may do (the permission table)', async () => {
  const target = await person();
  const selfId = await person();
  const selfTok = await login(server, { collection: coll, id: selfId, password: PW });
  const readIdx = uniqueName('ix');
  expect(await admin.post(`/v1/collections/${coll}/indexes`, { name: readIdx, terms: ['data.x'] }), 201);

  const callers = {
    admin,
    jwt: caller(server, server.serviceKey),
    server: keys.server,
    readonly: keys.readonly,
    client: keys.client,
    anon: caller(server, server.anonKey),
    none: caller(server, undefined),
    token: caller(server, selfTok.secret),
  };
  const ADMIN = ['admin', 'jwt'];
  const WRITE = [...ADMIN, 'server'];
  const READ = [...WRITE, 'readonly'];
  const EVERYONE = Object.keys(callers);
  const ME = [...READ, 'token'];

  const freshColl = async () => createCollection(admin);
  const freshDoc = async () => (await createDoc(admin, coll, { data: { v: 1 } })).id;
  const freshTok = async () => expect(await admin.post('/v1/tokens', { identity: { collection: coll, id: target } }), 201).token.id;
  const freshKey = async () => expect(await admin.post('/v1/keys', { role: 'server' }), 201).key.id;
  const freshCred = async () => {
    const id = uniqueName('cred');
    await createDoc(admin, coll, { id, data: {}, credentials: { password: PW } });
    return id;
  };

  const ops = [
    ['login', EVERYONE, 200, (w) => w.post('/v1/login', { collection: coll, id: target, password: PW })],
    ['identify', EVERYONE, 200, (w) => w.post('/v1/identify', { collection: coll, id: target, password: PW })],
    ['list collections', READ, 200, (w) => w.get('/v1/collections')],
    ['get collection', READ, 200, (w) => w.get(`/v1/collections/${coll}`)],
    ['list indexes', READ, 200, (w) => w.get(`/v1/collections/${coll}/indexes`)],
    ['get index', READ, 200, (w) => w.get(`/v1/collections/${coll}/indexes/${readIdx}`)],
    ['create collection', ADMIN, 201, (w) => w.post('/v1/collections', { name: uniqueName('perm') })],
    ['delete collection', ADMIN, 204, async (w) => w.del(`/v1/collections/${await freshColl()}`)],
    ['create index', ADMIN, 201, (w) => w.post(`/v1/collections/${coll}/indexes`, { name: uniqueName('ix'), terms: ['data.y'] })],
    ['delete index', ADMIN, 204, async (w) => {
      const n = uniqueName('ix');
      expect(await admin.post(`/v1/collections/${coll}/indexes`, { name: n, terms: ['data.z'] }), 201);
      return w.del(`/v1/collections/${coll}/indexes/${n}`);
    }],
    ['get document', READ, 200, (w) => w.get(`${docs()}/${target}`)],
    ['list documents', READ, 200, (w) => w.get(docs())],
    ['lookup', READ, 200, (w) => w.get(`/v1/collections/${coll}/indexes/by_email?term=${target}%40example.com`)],
    ['own document', [...READ, 'token'], 200, (w) => w.get(`${docs()}/${selfId}`)],
    ['create document', WRITE, 201, (w) => w.post(docs(), { data: { made: true } })],
    ['replace document', WRITE, 200, async (w) => w.put(`${docs()}/${await freshDoc()}`, { data: { v: 2 } })],
    ['merge document', WRITE, 200, async (w) => w.patch(`${docs()}/${await freshDoc()}`, { data: { v: 3 } })],
    ['merge own document data', WRITE, 200, (w) => w.patch(`${docs()}/${selfId}`, { data: { touched: true } })],
    ['delete document', WRITE, 204, async (w) => w.del(`${docs()}/${await freshDoc()}`)],
    ['create token', WRITE, 201, (w) => w.post('/v1/tokens', { identity: { collection: coll, id: target } })],
    ['list tokens', READ, 200, (w) => w.get('/v1/tokens')],
    ['get token', READ, 200, async (w) => w.get(`/v1/tokens/${await freshTok()}`)],
    ['revoke token', WRITE, 204, async (w) => w.del(`/v1/tokens/${await freshTok()}`)],
    ['create key', ADMIN, 201, (w) => w.post('/v1/keys', { role: 'client' })],
    ['list keys', ADMIN, 200, (w) => w.get('/v1/keys')],
    ['get key', ADMIN, 200, async (w) => w.get(`/v1/keys/${await freshKey()}`)],
    ['revoke key', ADMIN, 204, async (w) => w.del(`/v1/keys/${await freshKey()}`)],
    ['list credentials', ADMIN, 200, (w) => w.get('/v1/credentials')],
    ['delete credential', ADMIN, 200, async (w) => w.del(`/v1/credentials/${coll}/${await freshCred()}`)],
    ['read a ledger', READ, 200, (w) => w.get(`/v1/identities/${target}/sessions?collection=${coll}`)],
    ['delete from a ledger', WRITE, 204, async (w) => w.del(`/v1/identities/${target}/sessions/${await freshTok()}?collection=${coll}`)],
    ['me', ME, 200, (w) => w.get('/v1/me')],
    ['me/sessions', ME, 200, (w) => w.get('/v1/me/sessions')],
    ['logout (keys)', READ, 200, (w) => w.post('/v1/logout', { all: false })],
  ];

  const problems = [];
  for (const [what, allowed, okStatus, op] of ops) {
    for (const [name, who] of Object.entries(callers)) {
      if (what === 'logout (keys)' && name === 'token') continue; // would end the token: tested in v1-auth
      const res = await op(who);
      // Refused: 403 forbidden; an anonymous caller (the anon JWT, or no secret) gets the 401.
      const anonymous = name === 'anon' || name === 'none';
      const want = allowed.includes(name) ? okStatus : anonymous ? 401 : 403;
      const code = { 401: 'unauthorized', 403: 'forbidden' }[want];
      const good = res.status === want && (!code || res.body?.error?.code === code);
      if (!good) problems.push(`${what} as ${name}: want ${want}, got ${res.status} ${res.text.slice(0, 200)} (${res.req})`);
    }
  }
  assert.deepEqual(problems, [], problems.join('\n'));
  // The token still works after all that (nothing above revoked it).
  expect(await me(selfTok.secret), 200);
});

test('server-readonly reads documents but cannot write them; the client key only logs in', async () => {
  const id = await person();
  const ro = keys.readonly;
  expect(await ro.get(`${docs()}/${id}`), 200);
  expect(await ro.get(docs()), 200);
  assertForbidden(await ro.post(docs(), { data: {} }));
  assertForbidden(await ro.put(`${docs()}/${id}`, { data: {} }));
  assertForbidden(await ro.patch(`${docs()}/${id}`, { data: { x: 1 } }));
  assertForbidden(await ro.patch(`${docs()}/${id}`, { credentials: { password: 'another password' } }));
  assertForbidden(await ro.del(`${docs()}/${id}`));
  assert.deepEqual(expect(await admin.get(`${docs()}/${id}`), 200).data, { email: `${id}@example.com` });

  const cl = keys.client;
  const t = await login(server, { collection: coll, id, password: PW }, cl);
  expect(await me(t.secret), 200);
  assert.deepEqual(expect(await cl.post('/v1/identify', { collection: coll, id, password: PW }), 200), { valid: true });
  const refused = [
    await cl.get('/v1/collections'),
    await cl.get(`${docs()}/${id}`),
    await cl.post(docs(), { data: {} }),
    await cl.get('/v1/tokens'),
    await cl.post('/v1/tokens', { identity: { collection: coll, id } }),
    await cl.get('/v1/keys'),
    await cl.get('/v1/me'),
    await cl.get('/v1/me/sessions'),
    await cl.post('/v1/logout', { all: true }),
    // The server key cannot manage keys or credentials, nor create collections.
    await keys.server.get('/v1/keys'),
    await keys.server.post('/v1/keys', { role: 'server' }),
    await keys.server.get(`/v1/keys/${keys.client.key.id}`),
    await keys.server.del(`/v1/keys/${keys.client.key.id}`),
    await keys.server.get('/v1/credentials'),
    await keys.server.post('/v1/collections', { name: uniqueName('nope') }),
  ];
  const problems = refused
    .filter((r) => r.status !== 403 || r.body?.error?.code !== 'forbidden')
    .map((r) => `${r.req} → ${r.status} ${r.text.slice(0, 200)}`);
  assert.deepEqual(problems, [], `expected 403 forbidden:\n${problems.join('\n')}`);
});

test('the database keeps the SHA-256 of each secret', async () => {
  const { createHash } = await import('node:crypto');
  const id = await person();
  const t = await login(server, { collection: coll, id, password: PW });
  const k = expect(await admin.post('/v1/keys', { role: 'server' }), 201).key;
  for (const [rowId, secret] of [[t.id, t.secret], [k.id, k.secret]]) {
    const hex = server.backend === 'sqlite' ? 'lower(hex(hash))' : "encode(hash, 'hex')";
    const rows = dbQuery(server, `SELECT ${hex} FROM tokens WHERE id = '${rowId}'`);
    assert.deepEqual(rows, [createHash('sha256').update(secret).digest('hex')]);
  }
});

const sqliteOnly = PG ? () => {} : test;
sqliteOnly('the secrets of keys and tokens are not stored: the SQLite file holds neither', async () => {
  const { readFileSync, existsSync } = await import('node:fs');
  const id = await person();
  const t = await login(server, { collection: coll, id, password: PW });
  const k = expect(await admin.post('/v1/keys', { role: 'server' }), 201).key;
  const bytes = ['', '-wal'].map((s) => server.dbPath + s).filter(existsSync).map((p) => readFileSync(p).toString('latin1'));
  for (const b of bytes) {
    for (const s of [t.secret, k.secret, t.secret.slice(4), k.secret.slice(4)]) assert.ok(!b.includes(s), 'a secret is in the database file');
  }
});

test('keys from the command line: key create / list / revoke reach the running server', async () => {
  const made = cli(server, ['key', 'create', '--role', 'admin', '--description', 'made by the cli', '--ttl', '720h']);
  assert.equal(made.code, 0, `${made.out}\n${made.err}`);
  const secret = (made.out.match(/\btsk_[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])/) ?? [])[0];
  assert.ok(secret, `no tsk_ secret printed: ${made.out}`);
  const m = expect(await me(secret), 200);
  assert.equal(m.credential.kind, 'key');
  assert.equal(m.credential.role, 'admin');
  const id = m.credential.id;
  const got = expect(await admin.get(`/v1/keys/${id}`), 200);
  assert.equal(got.description, 'made by the cli');
  assert.equal(got.origin, 'cli');
  assertNear(got.expires_at, Date.now() + 720 * 3600e3, 120000, 'expires_at');
  const list = cli(server, ['key', 'list']);
  assert.equal(list.code, 0, list.err);
  assert.ok(list.out.includes(id), `key list lacks ${id}:\n${list.out}`);
  assert.ok(!/tsk_[A-Za-z0-9_-]{32}/.test(list.out), 'key list shows no secret');
  const rev = cli(server, ['key', 'revoke', id]);
  assert.equal(rev.code, 0, `${rev.out}\n${rev.err}`);
  // Another process's commit: the server sees it within a second (as for the CLI's user commands).
  assert.ok(await eventually(async () => (await me(secret)).status === 401, 1000), 'the revoked key still works');
  assertUnauthorized(await me(secret));
  const again = cli(server, ['key', 'revoke', id]);
  assert.notEqual(again.code, 0, 'revoking an unknown key fails');
  assert.notEqual(cli(server, ['key', 'create', '--role', 'root']).code, 0, 'a bad role fails');
});

// Several nodes on one PostgreSQL database: "Revocation and deletion take effect on the next
// request, on every node."
const cluster = PG ? test : () => {};
// The contract (SPEC §5): a revocation reaches every node within a second. Node B learns of it
// through LISTEN/NOTIFY, which it drains every 0.1 s, so its very next request may still be
// answered from its cache; within the second, and from then on, it must be refused.
cluster('two nodes: a token or key revoked on node A is refused by node B within a second', async () => {
  const b = await startServer({}, { shareWith: server });
  try {
    const id = await person();
    const t = await login(server, { collection: coll, id, password: PW });
    const k = expect(await admin.post('/v1/keys', { role: 'server' }), 201).key;
    const onB = (s) => v1(b, 'GET', '/v1/me', { as: s });
    const refusedOnB = async (s) => {
      const r = await eventually(async () => ((await onB(s)).status === 401 ? true : null), 1000, 20);
      assert.ok(r, 'still accepted on node B a second after the revocation');
      for (let i = 0; i < 3; i++) assertUnauthorized(await onB(s)); // and from then on
    };
    expect(await onB(t.secret), 200);
    expect(await onB(k.secret), 200);
    expect(await admin.del(`/v1/tokens/${t.id}`), 204);
    expect(await admin.del(`/v1/keys/${k.id}`), 204);
    await refusedOnB(t.secret);
    await refusedOnB(k.secret);
    // Deleting the identity on A: its token is refused on B too.
    const t2 = await login(b, { collection: coll, id, password: PW });
    expect(await onB(t2.secret), 200);
    expect(await admin.del(`${docs()}/${id}`), 204);
    await refusedOnB(t2.secret);
  } finally {
    const info = await b.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});
