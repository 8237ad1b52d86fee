// Native API (/v1): GoTrue users as identities of the built-in users collection — login through
// users_by_email, the user as a Document without any secret, deletion and bans ending tst_
// tokens, GoTrue access tokens as /v1 callers, their sessions in the ledger, and /v1/logout.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  newUser,
  signIn,
  api,
  getUserRaw,
  refreshRaw,
  passwordRaw,
  assertApiError,
  uniqueEmail,
  jwtPayload,
} from '../lib/server.mjs';
import {
  v1,
  caller,
  setupKeys,
  expect,
  assertV1Error,
  assertUnauthorized,
  assertInvalidCredentials,
  timeMs,
  login,
  listAll,
  UUID_RE,
} from '../lib/v1.mjs';

let server;
let keys;
let admin;

before(async () => {
  server = await startServer({});
  keys = await setupKeys(server);
  admin = keys.admin;
});

after(async () => {
  await finish(server);
});

const me = (secret) => v1(server, 'GET', '/v1/me', { as: secret });
const userDoc = (id) => `/v1/collections/users/documents/${id}`;
const loginByEmail = (email, password) => login(server, { collection: 'users', index: 'users_by_email', term: email, password });
const USER_DATA_KEYS = [
  'email', 'phone', 'role', 'aud', 'user_metadata', 'app_metadata', 'is_anonymous', 'created_at',
  'email_confirmed_at', 'last_sign_in_at', 'banned_until',
];

test('a signed-up user logs in through /v1/login by users_by_email and by id', async () => {
  const u = await newUser(server, { prefix: 'v1login', data: { name: 'Ada' } });
  const t = await loginByEmail(u.email, u.password);
  assert.deepEqual(t.identity, { collection: 'users', id: u.user.id });
  assert.equal(t.origin, 'login');
  const m = expect(await me(t.secret), 200);
  assert.deepEqual(m.identity, { collection: 'users', id: u.user.id });
  assert.equal(m.document.id, u.user.id);
  assert.equal(m.document.collection, 'users');
  assert.equal(m.document.data.email, u.email);
  const t2 = await login(server, { collection: 'users', id: u.user.id, password: u.password });
  expect(await me(t2.secret), 200);
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: 'users', index: 'users_by_email', term: u.email, password: 'wrong-horse-1' } }));
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: 'users', index: 'users_by_email', term: uniqueEmail('nobody'), password: u.password } }));
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: 'users', id: '00000000-0000-4000-8000-000000000000', password: u.password } }));
});

test('a user reads as a Document of users: the documented data, no password, no hash', async () => {
  const u = await newUser(server, { prefix: 'asdoc', data: { plan: 'pro' } });
  const d = expect(await admin.get(userDoc(u.user.id)), 200);
  assert.equal(d.id, u.user.id);
  assert.equal(d.collection, 'users');
  assert.ok(Number.isSafeInteger(d.ts), `ts ${d.ts}`);
  for (const k of Object.keys(d.data)) assert.ok(USER_DATA_KEYS.includes(k), `unexpected member data.${k}`);
  for (const k of ['email', 'role', 'aud', 'user_metadata', 'app_metadata', 'is_anonymous', 'created_at']) {
    assert.ok(k in d.data, `data.${k} missing: ${JSON.stringify(d)}`);
  }
  assert.equal(d.data.email, u.email);
  assert.equal(d.data.role, 'authenticated');
  assert.equal(d.data.aud, 'authenticated');
  assert.equal(d.data.is_anonymous, false);
  assert.deepEqual(d.data.user_metadata, u.user.user_metadata);
  assert.equal(d.data.user_metadata.plan, 'pro');
  timeMs(d.data.created_at, 'data.created_at');
  const texts = [JSON.stringify(d)];
  texts.push((await admin.get('/v1/collections/users/documents?size=1000')).text);
  const page = expect(await admin.get(`/v1/collections/users/indexes/users_by_email?term=${encodeURIComponent(u.email)}`), 200);
  assert.deepEqual(page.data.map((x) => x.id), [u.user.id]);
  texts.push(JSON.stringify(page));
  for (const t of texts) {
    assert.ok(!t.includes(u.password), 'the password is shown');
    assert.ok(!/\$argon2|\$2[aby]\$|encrypted_password|"password"/.test(t), `a hash is shown: ${t.slice(0, 300)}`);
  }
  // Enough users that creation order and id order differ.
  for (let i = 0; i < 6; i++) await newUser(server, { prefix: 'order' });
  const list = expect(await admin.get('/v1/collections/users/documents?size=1000'), 200);
  assert.ok(list.data.some((x) => x.id === u.user.id));
  const ids = list.data.map((x) => x.id);
  const { items } = await listAll(admin, '/v1/collections/users/documents', 1);
  assert.deepEqual(items.map((x) => x.id).sort(), [...ids].sort(), 'pages of users: complete, no duplicates');
  assert.deepEqual(ids, [...ids].sort(), 'users listed by id (as every collection\'s documents)');
});

test('/v1 does not write users except their credentials', async () => {
  const u = await newUser(server, { prefix: 'nowrite' });
  const before = expect(await admin.get(userDoc(u.user.id)), 200);
  for (const res of [
    await admin.post('/v1/collections/users/documents', { data: { email: uniqueEmail('v1made') } }),
    await admin.put(userDoc(u.user.id), { data: { email: uniqueEmail('x') } }),
    await admin.patch(userDoc(u.user.id), { data: { email: uniqueEmail('y') } }),
    await admin.post('/v1/collections/users/indexes', { name: 'users_by_phone', terms: ['data.phone'] }),
  ]) {
    assert.ok(res.status >= 400 && res.status < 500, `${res.req} → ${res.status} ${res.text}`);
    assert.ok(res.body?.error?.code, `error shape: ${res.text}`);
  }
  const afterAll = expect(await admin.get(userDoc(u.user.id)), 200);
  assert.deepEqual(afterAll.data, before.data);
  // Credentials may be set: the new password works through GoTrue too.
  expect(await admin.patch(userDoc(u.user.id), { credentials: { password: 'set-through-v1' } }), 200);
  assertApiError(await passwordRaw(server, u.email, u.password), 400, 'invalid_credentials');
  expect(await passwordRaw(server, u.email, 'set-through-v1'), 200);
});

test('a user changes its own password with a tst_ token and current_password', async () => {
  const u = await newUser(server, { prefix: 'selfpw' });
  const t = await loginByEmail(u.email, u.password);
  const self = caller(server, t.secret);
  assertInvalidCredentials(await self.patch(userDoc(u.user.id), { credentials: { password: 'new-password-9', current_password: 'wrong-one-9' } }));
  expect(await self.patch(userDoc(u.user.id), { credentials: { password: 'new-password-9', current_password: u.password } }), 200);
  expect(await passwordRaw(server, u.email, 'new-password-9'), 200);
  await loginByEmail(u.email, 'new-password-9');
  // The token reads its own user document.
  assert.equal(expect(await self.get(userDoc(u.user.id)), 200).id, u.user.id);
});

test('deleting the user through /admin/users ends its tst_ tokens; through /v1 it is the same deletion', async () => {
  const u = await newUser(server, { prefix: 'deluser' });
  const t = await loginByEmail(u.email, u.password);
  const k = expect(await admin.post('/v1/keys', { role: 'server', identity: { collection: 'users', id: u.user.id } }), 201).key;
  expect(await me(t.secret), 200);
  expect(await me(k.secret), 200);
  const del = await api(server, 'DELETE', `/admin/users/${u.user.id}`, { token: server.serviceKey });
  assert.equal(del.status, 200, del.text);
  assertUnauthorized(await me(t.secret));
  assertUnauthorized(await me(k.secret));
  assertUnauthorized(await me(u.session.access_token));
  assertV1Error(await admin.get(userDoc(u.user.id)), 404, 'not_found');

  const w = await newUser(server, { prefix: 'deluser2' });
  const tw = await loginByEmail(w.email, w.password);
  expect(await admin.del(userDoc(w.user.id)), 204);
  assertUnauthorized(await me(tw.secret));
  assertApiError(await getUserRaw(server, w.session.access_token), 403, 'session_not_found');
  assertApiError(await refreshRaw(server, w.session.refresh_token), 400, 'refresh_token_not_found');
  const gone = await api(server, 'GET', `/admin/users/${w.user.id}`, { token: server.serviceKey });
  assertApiError(gone, 404, 'user_not_found');
  assertV1Error(await admin.del(userDoc(w.user.id)), 404, 'not_found');
  assertV1Error(await v1(server, 'POST', '/v1/tokens', { as: admin.secret, body: { identity: { collection: 'users', id: w.user.id } } }), 404, 'not_found');
});

test('a soft-deleted user: its tst_ tokens get the 401 and it cannot log in', async () => {
  const u = await newUser(server, { prefix: 'softdel' });
  const t = await loginByEmail(u.email, u.password);
  const del = await api(server, 'DELETE', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { should_soft_delete: true } });
  assert.equal(del.status, 200, del.text);
  assertUnauthorized(await me(t.secret));
  assertUnauthorized(await me(u.session.access_token));
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: 'users', id: u.user.id, password: u.password } }));
  assertV1Error(await admin.get(userDoc(u.user.id)), 404, 'not_found');
});

test('a banned user: tst_ tokens get the 401 and login the failed-login 400', async () => {
  const u = await newUser(server, { prefix: 'banned' });
  const t = await loginByEmail(u.email, u.password);
  const ban = await api(server, 'PUT', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { ban_duration: '24h' } });
  assert.equal(ban.status, 200, ban.text);
  assertUnauthorized(await me(t.secret));
  assertInvalidCredentials(await v1(server, 'POST', '/v1/login', { body: { collection: 'users', index: 'users_by_email', term: u.email, password: u.password } }));
  const unban = await api(server, 'PUT', `/admin/users/${u.user.id}`, { token: server.serviceKey, body: { ban_duration: 'none' } });
  assert.equal(unban.status, 200, unban.text);
  const t2 = await loginByEmail(u.email, u.password);
  expect(await me(t2.secret), 200);
});

test('an unconfirmed e-mail: 400 email_not_confirmed after a correct password, invalid_credentials otherwise', async () => {
  const s = await startServer({ MAILER_AUTOCONFIRM: 'false' });
  try {
    const email = uniqueEmail('unconfirmed');
    const su = await api(s, 'POST', '/signup', { body: { email, password: 'correct-horse-1' } });
    assert.equal(su.status, 200, su.text);
    const body = { collection: 'users', index: 'users_by_email', term: email, password: 'correct-horse-1' };
    assertV1Error(await v1(s, 'POST', '/v1/login', { body }), 400, 'email_not_confirmed');
    const wrong = await v1(s, 'POST', '/v1/login', { body: { ...body, password: 'wrong-horse-1' } });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body?.error?.code, 'invalid_credentials', wrong.text);
  } finally {
    const info = await s.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});

test('a GoTrue access token is a /v1 caller: the user, while its session lives', async () => {
  const u = await newUser(server, { prefix: 'jwtcaller' });
  const m = expect(await me(u.session.access_token), 200);
  assert.deepEqual(m.identity, { collection: 'users', id: u.user.id });
  assert.equal(m.document.id, u.user.id);
  assert.equal(m.credential.kind, 'jwt');
  // As apikey too, when there is no Authorization header.
  expect(await v1(server, 'GET', '/v1/me', { apikey: u.session.access_token }), 200);
  // The user's access token is not an admin: documents of others are refused.
  const other = await newUser(server, { prefix: 'jwtother' });
  const r = await v1(server, 'GET', userDoc(other.user.id), { as: u.session.access_token });
  assertV1Error(r, 403, 'forbidden');
  // GoTrue logout ends the session: the JWT is refused at once.
  const out = await api(server, 'POST', '/logout?scope=local', { token: u.session.access_token });
  assert.equal(out.status, 204, out.text);
  assertUnauthorized(await me(u.session.access_token));
});

test('sessions ledger of a user: GoTrue sessions with their refresh-token counts; deleting one ends it', async () => {
  const u = await newUser(server, { prefix: 'ledger' });
  const s2 = await signIn(server, u.email, u.password);
  const rot = await refreshRaw(server, s2.session.refresh_token);
  assert.equal(rot.status, 200, rot.text);
  const t = await loginByEmail(u.email, u.password);
  const sid1 = jwtPayload(u.session.access_token).session_id;
  const sid2 = jwtPayload(s2.session.access_token).session_id;

  const path = `/v1/identities/${u.user.id}/sessions?collection=users`;
  for (const who of [admin, keys.server, keys.readonly]) {
    const l = expect(await who.get(path), 200);
    assert.deepEqual(l.identity, { collection: 'users', id: u.user.id });
    assert.deepEqual(l.sessions.map((x) => x.id).sort(), [sid1, sid2].sort());
    for (const x of l.sessions) {
      assert.match(x.id, UUID_RE);
      for (const k of ['created_at', 'refreshed_at', 'not_after', 'aal', 'ip', 'user_agent', 'refresh_tokens']) {
        assert.ok(k in x, `session member ${k}: ${JSON.stringify(x)}`);
      }
      timeMs(x.created_at);
      assert.equal(x.aal, 'aal1');
    }
    const one = l.sessions.find((x) => x.id === sid1);
    const two = l.sessions.find((x) => x.id === sid2);
    assert.deepEqual(one.refresh_tokens, { issued: 1, active: 1 });
    assert.deepEqual(two.refresh_tokens, { issued: 2, active: 1 });
    timeMs(two.refreshed_at);
    assert.deepEqual(l.tokens.map((x) => x.id), [t.id]);
    assert.ok(!JSON.stringify(l).includes('tst_'));
    assert.ok(Array.isArray(l.keys));
  }
  // Without ?collection the id is found in users alone.
  expect(await admin.get(`/v1/identities/${u.user.id}/sessions`), 200);
  // The user's own view, with its access token.
  const mine = expect(await v1(server, 'GET', '/v1/me/sessions', { as: u.session.access_token }), 200);
  assert.deepEqual(mine.sessions.map((x) => x.id).sort(), [sid1, sid2].sort());

  // Ending one session: its access token and refresh token die on the next request; the other lives.
  assertV1Error(await keys.readonly.del(`/v1/identities/${u.user.id}/sessions/${sid2}?collection=users`), 403, 'forbidden');
  expect(await admin.del(`/v1/identities/${u.user.id}/sessions/${sid2}?collection=users`), 204);
  assertApiError(await getUserRaw(server, rot.body.access_token), 403, 'session_not_found');
  assertUnauthorized(await me(rot.body.access_token));
  assertApiError(await refreshRaw(server, rot.body.refresh_token), 400, 'refresh_token_not_found');
  assert.equal((await getUserRaw(server, u.session.access_token)).status, 200);
  // And through /v1/me/sessions: the user ends its tst_ token.
  expect(await v1(server, 'DELETE', `/v1/me/sessions/${t.id}`, { as: u.session.access_token }), 204);
  assertUnauthorized(await me(t.secret));
  assertV1Error(await admin.del(`/v1/identities/${u.user.id}/sessions/${sid2}?collection=users`), 404, 'not_found');
  const l = expect(await admin.get(path), 200);
  assert.deepEqual(l.sessions.map((x) => x.id), [sid1]);
  assert.deepEqual(l.tokens, []);
});

test('/v1/logout with a GoTrue access token: all:false ends its session; all:true every session and token', async () => {
  const u = await newUser(server, { prefix: 'v1logout' });
  const s2 = await signIn(server, u.email, u.password);
  const t = await loginByEmail(u.email, u.password);
  const out1 = await v1(server, 'POST', '/v1/logout', { as: u.session.access_token, body: { all: false } });
  expect(out1, 200);
  assert.equal(out1.body.logged_out, true);
  assertApiError(await getUserRaw(server, u.session.access_token), 403, 'session_not_found');
  assertApiError(await refreshRaw(server, u.session.refresh_token), 400, 'refresh_token_not_found');
  assert.equal((await getUserRaw(server, s2.session.access_token)).status, 200);
  expect(await me(t.secret), 200);

  const s3 = await signIn(server, u.email, u.password);
  const out2 = await v1(server, 'POST', '/v1/logout', { as: s2.session.access_token, body: { all: true } });
  expect(out2, 200);
  assert.equal(out2.body.logged_out, true);
  assertApiError(await getUserRaw(server, s2.session.access_token), 403, 'session_not_found');
  assertApiError(await getUserRaw(server, s3.session.access_token), 403, 'session_not_found');
  assertUnauthorized(await me(t.secret));
  // The user can still sign in.
  expect(await passwordRaw(server, u.email, u.password), 200);
});

test('deleting a user\'s credential with revoke=true ends its sessions and tokens', async () => {
  const u = await newUser(server, { prefix: 'credrevoke' });
  const t = await loginByEmail(u.email, u.password);
  const d = await admin.del(`/v1/credentials/users/${u.user.id}?revoke=true`);
  expect(d, 200);
  assert.equal(d.body.deleted, true);
  assert.ok(d.body.revoked >= 1, d.text);
  assertUnauthorized(await me(t.secret));
  assertApiError(await getUserRaw(server, u.session.access_token), 403, 'session_not_found');
  assertApiError(await passwordRaw(server, u.email, u.password), 400, 'invalid_credentials');
  expect(await admin.get(userDoc(u.user.id)), 200); // the user stays

  const w = await newUser(server, { prefix: 'credkeep' });
  const tw = await loginByEmail(w.email, w.password);
  assert.deepEqual(expect(await admin.del(`/v1/credentials/users/${w.user.id}`), 200), { deleted: true, revoked: 0 });
  expect(await me(tw.secret), 200);
  assert.equal((await getUserRaw(server, w.session.access_token)).status, 200);
  assertApiError(await passwordRaw(server, w.email, w.password), 400, 'invalid_credentials');
});
