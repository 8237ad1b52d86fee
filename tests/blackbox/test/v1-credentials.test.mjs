// Native API (/v1): password credentials on documents — never stored in the document nor shown
// anywhere; set by keys, changed by the identity with current_password, imported as bcrypt or
// argon2id hashes; the credentials admin (list without hashes, delete with and without revoke).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { PG, startServer, finish, test, newUser } from '../lib/server.mjs';
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
  timeMs,
  login,
  listAll,
  dbQuery,
  INVALID_CREDENTIALS,
} from '../lib/v1.mjs';

// bcrypt of "old-password-2" ($2a$) and of "old-password-1" ($2b$), cost 4 (as in import.test.mjs).
const BCRYPT_2A = '$2a$04$RHEL8bDbtACpvtAvaFNiNOODd4oW7OA329SRVsBtLAtGjMlTVwlG.';
const BCRYPT_2B = '$2b$04$ZQkR6FjAHgQcwqbKSh31Leh2owDHM4/1hNYTO/J1SVeZkWHE4frcm';

let server;
let keys;
let admin;
let coll;
const PW = 'correct horse battery';

before(async () => {
  server = await startServer({});
  keys = await setupKeys(server);
  admin = keys.admin;
  coll = await createCollection(admin, uniqueName('members'));
  expect(await admin.post(`/v1/collections/${coll}/indexes`, { name: 'by_email', terms: ['data.email'], unique: true }), 201);
});

after(async () => {
  await finish(server);
});

const docs = (c = coll) => `/v1/collections/${c}/documents`;
const me = (secret) => v1(server, 'GET', '/v1/me', { as: secret });
const loginRaw = (body) => v1(server, 'POST', '/v1/login', { body });
const sqliteOnly = PG ? () => {} : test;

async function member(credentials = { password: PW }, who = admin) {
  const id = uniqueName('m');
  const doc = await createDoc(who, coll, { id, data: { email: `${id}@example.com` }, credentials });
  return { id, doc };
}

/** The stored hash of a document's password (from the database). */
function storedHash(c, id) {
  const rows = dbQuery(server, `SELECT hash FROM doc_credentials WHERE collection = '${c}' AND doc_id = '${id}'`);
  return rows[0];
}

test('the password is never in a response, a list, a lookup, /v1/me, or the log', async () => {
  const secretPw = `Unique-Pa55word-${uniqueName('pw')}`;
  const id = uniqueName('secretive');
  const email = `${id}@example.com`;
  const responses = [];
  const created = await admin.post(docs(), { id, data: { email }, credentials: { password: secretPw } });
  expect(created, 201);
  responses.push(created);
  assert.deepEqual(Object.keys(created.body).sort(), ['collection', 'data', 'id', 'ts']);
  assert.deepEqual(created.body.data, { email }, 'credentials are not stored in data');
  const tok = await login(server, { collection: coll, id, password: secretPw });
  responses.push(await admin.get(`${docs()}/${id}`));
  responses.push(await admin.get(docs()));
  responses.push(await admin.get(`/v1/collections/${coll}/indexes/by_email?term=${encodeURIComponent(email)}`));
  responses.push(await me(tok.secret));
  responses.push(await admin.get('/v1/credentials'));
  responses.push(await admin.get(`/v1/identities/${id}/sessions?collection=${coll}`));
  responses.push(await v1(server, 'GET', '/v1/me/sessions', { as: tok.secret }));
  // A merge and a replace that set it again answer without it too.
  responses.push(await admin.patch(`${docs()}/${id}`, { data: { x: 1 }, credentials: { password: secretPw } }));
  responses.push(await admin.put(`${docs()}/${id}`, { data: { email }, credentials: { password: secretPw } }));
  // Errors do not echo it.
  responses.push(await admin.post(docs(), { id, data: { email }, credentials: { password: secretPw } })); // 409
  responses.push(await admin.post(docs(), { data: {}, credentials: { password: secretPw }, bogus: 1 })); // 400
  responses.push(await loginRaw({ collection: coll, id, password: `${secretPw}x` }));
  responses.push(await admin.patch(`${docs()}/${id}`, { credentials: { password: secretPw, nope: secretPw } }));
  for (const r of responses) {
    assert.ok(r.status < 500, r.req);
    assert.ok(!r.text.includes(secretPw), `the password appears in ${r.req} → ${r.status}`);
    assert.ok(!/\$argon2|\$2[aby]\$/.test(r.text), `a hash appears in ${r.req} → ${r.status}`);
    assert.ok(!/"credentials"/.test(r.text), `a credentials member appears in ${r.req}`);
  }
  for (const r of responses.slice(1, 5)) expect(r, 200);
  const logs = server.logs().join('\n');
  assert.ok(!logs.includes(secretPw), 'the password is in the log');
  assert.ok(!logs.includes(tok.secret), 'a token secret is in the log');
  assert.ok(!logs.includes(keys.admin.secret), 'a key secret is in the log');
});

sqliteOnly('the SQLite file holds neither the password nor a credentials member in documents.data', async () => {
  const secretPw = `File-Pa55word-${uniqueName('pw')}`;
  const id = uniqueName('filecheck');
  await createDoc(admin, coll, { id, data: { email: `${id}@example.com` }, credentials: { password: secretPw } });
  expect(await admin.patch(`${docs()}/${id}`, { data: { y: 2 }, credentials: { password: `${secretPw}-2` } }), 200);
  const rows = dbQuery(server, `SELECT data FROM documents WHERE collection = '${coll}'`);
  assert.ok(rows.length > 0);
  for (const row of rows) {
    const data = JSON.parse(row);
    assert.equal(data.credentials, undefined, `credentials stored in data: ${row}`);
    assert.ok(!row.includes(secretPw), `password stored in data: ${row}`);
  }
  for (const p of ['', '-wal', '-journal'].map((s) => server.dbPath + s)) {
    if (!existsSync(p)) continue;
    const bytes = readFileSync(p);
    assert.equal(bytes.indexOf(Buffer.from(secretPw)), -1, `the password is in ${p}`);
  }
  const hash = storedHash(coll, id);
  assert.match(hash, /^\$argon2id\$/, 'stored as an argon2id hash');
});

test('weak passwords → 422 weak_password (nothing written); bad credentials members → 400', async () => {
  const id = uniqueName('weak');
  assertV1Error(await admin.post(docs(), { id, data: {}, credentials: { password: 'abc' } }), 422, 'weak_password');
  assertV1Error(await admin.get(`${docs()}/${id}`), 404, 'not_found');
  const m = await member();
  assertV1Error(await admin.patch(`${docs()}/${m.id}`, { data: { changed: true }, credentials: { password: '12345' } }), 422, 'weak_password');
  assert.equal(expect(await admin.get(`${docs()}/${m.id}`), 200).data.changed, undefined, 'the 422 wrote nothing');
  await login(server, { collection: coll, id: m.id, password: PW });
  for (const credentials of [
    { password: 5 },
    { password: PW, foo: 1 },
    { hashed_password: 'plain text' },
    { hashed_password: '$1$abc$def' },
    { hashed_password: 5 },
    { password: PW, hashed_password: BCRYPT_2A },
    [],
    'pw',
  ]) {
    assertV1Error(await admin.post(docs(), { data: {}, credentials }), 400, 'invalid_request');
  }
});

test('keys set a password directly; PUT without credentials keeps it; server-readonly cannot', async () => {
  const m = await member();
  expect(await keys.server.patch(`${docs()}/${m.id}`, { credentials: { password: 'set by server' } }), 200);
  assertInvalidCredentials(await loginRaw({ collection: coll, id: m.id, password: PW }));
  await login(server, { collection: coll, id: m.id, password: 'set by server' });
  expect(await admin.put(`${docs()}/${m.id}`, { data: { replaced: true }, credentials: { password: 'set by admin put' } }), 200);
  await login(server, { collection: coll, id: m.id, password: 'set by admin put' });
  expect(await admin.put(`${docs()}/${m.id}`, { data: { replaced: 2 } }), 200);
  await login(server, { collection: coll, id: m.id, password: 'set by admin put' });
  expect(await admin.patch(`${docs()}/${m.id}`, { data: { merged: 1 } }), 200);
  await login(server, { collection: coll, id: m.id, password: 'set by admin put' });
  assertForbidden(await keys.readonly.patch(`${docs()}/${m.id}`, { credentials: { password: 'by readonly' } }));
  // A document created without a password gets one later.
  const bare = uniqueName('bare');
  await createDoc(admin, coll, { id: bare, data: {} });
  assertInvalidCredentials(await loginRaw({ collection: coll, id: bare, password: PW }));
  expect(await admin.patch(`${docs()}/${bare}`, { credentials: { password: PW } }), 200);
  await login(server, { collection: coll, id: bare, password: PW });
});

test('a token changes its own password with current_password; wrong or missing → the failed-login 400', async () => {
  const m = await member();
  const t = await login(server, { collection: coll, id: m.id, password: PW });
  const self = caller(server, t.secret);
  const path = `${docs()}/${m.id}`;

  const wrong = await self.patch(path, { credentials: { password: 'brand new password', current_password: 'not the password' } });
  assertInvalidCredentials(wrong);
  assert.deepEqual(wrong.body, INVALID_CREDENTIALS);
  const missing = await self.patch(path, { credentials: { password: 'brand new password' } });
  assertInvalidCredentials(missing);
  await login(server, { collection: coll, id: m.id, password: PW }); // unchanged

  // Other members, other documents and other verbs are refused to a token.
  assertForbidden(await self.patch(path, { data: { x: 1 }, credentials: { password: 'brand new password', current_password: PW } }));
  assertForbidden(await self.patch(path, { data: { x: 1 } }));
  assertForbidden(await self.put(path, { data: {}, credentials: { password: 'brand new password', current_password: PW } }));
  assertForbidden(await self.del(path));
  const other = await member();
  assertForbidden(await self.patch(`${docs()}/${other.id}`, { credentials: { password: 'brand new password', current_password: PW } }));
  await login(server, { collection: coll, id: other.id, password: PW });
  await login(server, { collection: coll, id: m.id, password: PW });
  assertV1Error(await self.patch(path, { credentials: { password: 'abc', current_password: PW } }), 422, 'weak_password');

  const ok = await self.patch(path, { credentials: { password: 'brand new password', current_password: PW } });
  expect(ok, 200);
  assert.equal(ok.body.id, m.id);
  assert.ok(!ok.text.includes('brand new password'));
  assertInvalidCredentials(await loginRaw({ collection: coll, id: m.id, password: PW }));
  await login(server, { collection: coll, id: m.id, password: 'brand new password' });
  assert.deepEqual(expect(await admin.get(path), 200).data, m.doc.data, 'data unchanged');
  expect(await me(t.secret), 200);
});

test('imported bcrypt hashes ($2a$, $2b$, $2y$) log in, and are replaced by argon2id at the first login', async () => {
  const BCRYPT_2Y = BCRYPT_2B.replace('$2b$', '$2y$');
  const cases = [
    [BCRYPT_2A, 'old-password-2'],
    [BCRYPT_2B, 'old-password-1'],
    [BCRYPT_2Y, 'old-password-1'],
  ];
  for (const [hash, pw] of cases) {
    const m = await member({ hashed_password: hash }, keys.server);
    assert.equal(storedHash(coll, m.id), hash, 'stored as given until the first login');
    assertInvalidCredentials(await loginRaw({ collection: coll, id: m.id, password: `${pw}x` }));
    assert.equal(storedHash(coll, m.id), hash, 'a failed login does not rehash');
    await login(server, { collection: coll, id: m.id, password: pw });
    assert.match(storedHash(coll, m.id), /^\$argon2id\$/, 'rehashed as argon2id');
    await login(server, { collection: coll, id: m.id, password: pw });
    assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: m.id, password: pw } }), 200), { valid: true });
  }
  // An import through a merge, by index login.
  const m = await member();
  expect(await admin.patch(`${docs()}/${m.id}`, { credentials: { hashed_password: BCRYPT_2A } }), 200);
  await login(server, { collection: coll, index: 'by_email', term: `${m.id}@example.com`, password: 'old-password-2' });
  assertInvalidCredentials(await loginRaw({ collection: coll, id: m.id, password: PW }));
});

test('an imported argon2id hash logs in', async () => {
  // A real argon2id hash: the one Tessera stored for a GoTrue user's password.
  const u = await newUser(server, { prefix: 'argon', password: 'argon-imported-1' });
  const rows = dbQuery(server, `SELECT hash FROM credentials WHERE identity_id = '${u.user.id}'`);
  const hash = rows[0];
  assert.match(hash, /^\$argon2id\$/);
  const m = await member({ hashed_password: hash });
  await login(server, { collection: coll, id: m.id, password: 'argon-imported-1' });
  assertInvalidCredentials(await loginRaw({ collection: coll, id: m.id, password: 'argon-imported-2' }));
});

test('credentials admin: list by (collection, id) with pages and never a hash; users included', async () => {
  const c = await createCollection(admin);
  const ids = [];
  for (let i = 0; i < 5; i++) {
    const id = `cr${i}`;
    ids.push(id);
    await createDoc(admin, c, { id, data: {}, credentials: i === 4 ? { hashed_password: BCRYPT_2B } : { password: PW } });
  }
  await createDoc(admin, c, { id: 'nopw', data: {} });
  const u = await newUser(server, { prefix: 'credlist' });

  const { items } = await listAll(admin, `/v1/credentials?collection=${c}`, 2);
  assert.deepEqual(items.map((x) => x.id), ids);
  for (const x of items) {
    assert.deepEqual(Object.keys(x).sort(), ['collection', 'created_at', 'id', 'strategy', 'updated_at']);
    assert.equal(x.collection, c);
    assert.equal(x.strategy, 'password');
    timeMs(x.created_at);
    timeMs(x.updated_at);
  }
  const all = await listAll(admin, '/v1/credentials', 1000);
  const text = JSON.stringify(all.items);
  assert.ok(!/\$argon2|\$2[aby]\$/.test(text), 'a hash in the credentials list');
  assert.ok(all.items.some((x) => x.collection === 'users' && x.id === u.user.id), 'users have credentials too');
  const keysOf = all.items.map((x) => `${x.collection}\u0000${x.id}`);
  assert.deepEqual(keysOf, [...keysOf].sort(), 'ordered by collection, then id');
  assert.equal(new Set(keysOf).size, keysOf.length);
  const users = expect(await admin.get('/v1/credentials?collection=users'), 200).data;
  assert.ok(users.every((x) => x.collection === 'users'));

  // updated_at moves when the password changes.
  const beforeChange = items.find((x) => x.id === 'cr0');
  expect(await admin.patch(`/v1/collections/${c}/documents/cr0`, { credentials: { password: 'a changed password' } }), 200);
  const afterChange = expect(await admin.get(`/v1/credentials?collection=${c}`), 200).data.find((x) => x.id === 'cr0');
  assert.equal(afterChange.created_at, beforeChange.created_at);
  assert.ok(timeMs(afterChange.updated_at) >= timeMs(beforeChange.updated_at));
  assert.notEqual(afterChange.updated_at, beforeChange.updated_at);
});

test('deleting a credential does not revoke tokens; with revoke=true it does', async () => {
  const a = await member();
  const ta = await login(server, { collection: coll, id: a.id, password: PW });
  const del = await admin.del(`/v1/credentials/${coll}/${a.id}`);
  assert.deepEqual(expect(del, 200), { deleted: true, revoked: 0 });
  expect(await me(ta.secret), 200);
  assertInvalidCredentials(await loginRaw({ collection: coll, id: a.id, password: PW }));
  assert.deepEqual(expect(await v1(server, 'POST', '/v1/identify', { body: { collection: coll, id: a.id, password: PW } }), 200), { valid: false });
  assertV1Error(await admin.del(`/v1/credentials/${coll}/${a.id}`), 404, 'not_found');
  assert.ok(!expect(await admin.get(`/v1/credentials?collection=${coll}&size=1000`), 200).data.some((x) => x.id === a.id));
  expect(await admin.get(`${docs()}/${a.id}`), 200); // the document stays

  const b = await member();
  const tb1 = await login(server, { collection: coll, id: b.id, password: PW });
  const tb2 = expect(await admin.post('/v1/tokens', { identity: { collection: coll, id: b.id } }), 201).token;
  const other = await member();
  const to = await login(server, { collection: coll, id: other.id, password: PW });
  const delr = await admin.del(`/v1/credentials/${coll}/${b.id}?revoke=true`);
  assert.deepEqual(expect(delr, 200), { deleted: true, revoked: 2 });
  assertUnauthorized(await me(tb1.secret));
  assertUnauthorized(await me(tb2.secret));
  expect(await me(to.secret), 200);
  assertInvalidCredentials(await loginRaw({ collection: coll, id: b.id, password: PW }));
  assertV1Error(await admin.del(`/v1/credentials/${coll}/nobody`), 404, 'not_found');
  assertForbidden(await keys.server.del(`/v1/credentials/${coll}/${other.id}`));
  await login(server, { collection: coll, id: other.id, password: PW });
});
