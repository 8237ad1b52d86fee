// Every route under /auth/v1 too; /settings and /health shapes; GOTRUE_ aliases (issue item 12).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  makeClient,
  uniqueEmail,
  api,
  assertApiError,
} from '../lib/server.mjs';

let open; // autoconfirm on, anonymous on
let closed; // defaults except signup disabled
let aliased; // configured only through GOTRUE_* names

before(async () => {
  open = await startServer({ MAILER_AUTOCONFIRM: 'true', EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true' });
  closed = await startServer({ MAILER_AUTOCONFIRM: null, DISABLE_SIGNUP: 'true' });
  aliased = await startServer({
    GOTRUE_MAILER_AUTOCONFIRM: 'true',
    GOTRUE_EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true',
    GOTRUE_JWT_EXP: '900',
  });
});

after(async () => {
  await finish(open, closed, aliased);
});

test('GET /health shape', async () => {
  for (const prefix of ['', '/auth/v1']) {
    const res = await api(open, 'GET', `${prefix}/health`);
    assert.equal(res.status, 200, res.text);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    for (const k of ['version', 'name', 'description']) {
      assert.equal(typeof res.body[k], 'string', `health.${k}: ${res.text}`);
      assert.ok(res.body[k].length > 0);
    }
  }
  // No auth needed.
  const bare = await api(open, 'GET', '/health', { apikey: null, version: false });
  assert.equal(bare.status, 200);
});

test('GET /settings reflects the configuration', async () => {
  const a = await api(open, 'GET', '/settings');
  assert.equal(a.status, 200, a.text);
  assert.equal(a.body.external.email, true);
  assert.equal(a.body.external.anonymous_users, true);
  assert.equal(typeof a.body.external.phone, 'boolean');
  assert.equal(a.body.disable_signup, false);
  assert.equal(a.body.mailer_autoconfirm, true);

  const b = await api(closed, 'GET', '/auth/v1/settings');
  assert.equal(b.status, 200, b.text);
  assert.equal(b.body.external.email, true);
  assert.equal(b.body.external.anonymous_users, false);
  assert.equal(b.body.disable_signup, true);
  assert.equal(b.body.mailer_autoconfirm, false);
});

test('GOTRUE_* environment names are accepted as aliases', async () => {
  const s = await api(aliased, 'GET', '/settings');
  assert.equal(s.status, 200);
  assert.equal(s.body.mailer_autoconfirm, true);
  assert.equal(s.body.external.anonymous_users, true);
  const { data, error } = await makeClient(aliased).signUp({ email: uniqueEmail('alias'), password: 'correct-horse-1' });
  assert.equal(error, null);
  assert.equal(data.session.expires_in, 900);
});

test('/, /auth/v1: health, settings and jwks give the same bodies', async () => {
  for (const p of ['/health', '/settings', '/.well-known/jwks.json']) {
    const a = await api(open, 'GET', p);
    const b = await api(open, 'GET', `/auth/v1${p}`);
    assert.equal(a.status, 200, `${p}: ${a.text}`);
    assert.equal(b.status, 200, `/auth/v1${p}: ${b.text}`);
    assert.deepEqual(b.body, a.body, p);
  }
});

test('the whole auth-js flow works against /auth/v1', async () => {
  const client = makeClient(open, { url: open.authUrl });
  const email = uniqueEmail('prefixed');
  const su = await client.signUp({ email, password: 'correct-horse-1' });
  assert.equal(su.error, null);
  const c2 = makeClient(open, { url: open.authUrl });
  const si = await c2.signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(si.error, null);
  assert.equal((await c2.getUser()).data.user.email, email);
  const up = await c2.updateUser({ data: { where: 'prefixed' } });
  assert.equal(up.error, null);
  assert.equal(up.data.user.user_metadata.where, 'prefixed');
  const rf = await c2.refreshSession();
  assert.equal(rf.error, null);
  const claims = await c2.getClaims();
  assert.equal(claims.error, null);
  assert.equal(claims.data.claims.email, email);
  assert.equal((await c2.signOut({ scope: 'others' })).error, null);
  assert.equal((await client.getUser()).error?.name, 'AuthSessionMissingError');
  assert.equal((await c2.getUser()).error, null);
  assert.equal((await c2.signOut({ scope: 'local' })).error, null);
  assertApiError(await api(open, 'GET', '/auth/v1/user', { token: rf.data.session.access_token }), 403, 'session_not_found');

  const anon = await makeClient(open, { url: open.authUrl }).signInAnonymously();
  assert.equal(anon.error, null);
  assert.equal(anon.data.user.is_anonymous, true);

  // Admin under the prefix.
  const admin = makeClient(open, { url: open.authUrl, key: 'service' }).admin;
  const created = await admin.createUser({ email: uniqueEmail('prefixed-admin'), password: 'correct-horse-1', email_confirm: true });
  assert.equal(created.error, null);
  const id = created.data.user.id;
  assert.equal((await admin.getUserById(id)).data.user.id, id);
  assert.equal((await admin.updateUserById(id, { user_metadata: { x: 1 } })).data.user.user_metadata.x, 1);
  const list = await admin.listUsers({ page: 1, perPage: 1 });
  assert.equal(list.error, null);
  assert.equal(list.data.users.length, 1);
  assert.ok(list.data.total >= 3);
  assert.equal(list.data.nextPage, 2);
  assert.equal((await admin.deleteUser(id)).error, null);
  assertApiError(await api(open, 'GET', `/auth/v1/admin/users/${id}`, { token: open.serviceKey }), 404, 'user_not_found');
});

test('raw routes answer identically with and without the prefix', async () => {
  const email = uniqueEmail('raw-prefix');
  const su = await api(open, 'POST', '/auth/v1/signup', { body: { email, password: 'correct-horse-1' } });
  assert.equal(su.status, 200, su.text);
  const tok = await api(open, 'POST', '/auth/v1/token?grant_type=password', { body: { email, password: 'correct-horse-1' } });
  assert.equal(tok.status, 200, tok.text);
  const at = tok.body.access_token;
  for (const p of ['/user', '/auth/v1/user']) {
    const r = await api(open, 'GET', p, { token: at });
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    assert.equal(r.body.email, email);
  }
  const put = await api(open, 'PUT', '/auth/v1/user', { token: at, body: { data: { k: 'v' } } });
  assert.equal(put.status, 200, put.text);
  const rt = await api(open, 'POST', '/auth/v1/token?grant_type=refresh_token', { body: { refresh_token: tok.body.refresh_token } });
  assert.equal(rt.status, 200, rt.text);

  // Errors are the same under both prefixes.
  for (const p of ['', '/auth/v1']) {
    assertApiError(await api(open, 'GET', `${p}/user`), 401, 'no_authorization');
    assertApiError(await api(open, 'POST', `${p}/token?grant_type=password`, { body: { email, password: 'nope-nope-1' } }), 400, 'invalid_credentials');
    assertApiError(await api(open, 'GET', `${p}/admin/users`, { token: at }), 403, 'not_admin');
    assert.equal((await api(open, 'GET', `${p}/does-not-exist`)).status, 404);
  }

  const out = await api(open, 'POST', '/auth/v1/logout?scope=global', { token: rt.body.access_token });
  assert.equal(out.status, 204, out.text);
  assertApiError(await api(open, 'GET', '/user', { token: at }), 403, 'session_not_found');
});

test('the prefix is only /auth/v1: near misses are 404', async () => {
  for (const p of ['/auth/v2/health', '/auth/health', '/auth/v1x/health', '/v1/auth/health']) {
    const r = await api(open, 'GET', p);
    assert.equal(r.status, 404, `${p}: ${r.status} ${r.text}`);
  }
});
