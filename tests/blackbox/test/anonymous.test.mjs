// Anonymous sign-in (issue item 6).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  makeClient,
  getUserRaw,
  refreshRaw,
  assertAuthError,
  api,
  jwtPayload,
  UUID_RE,
} from '../lib/server.mjs';

let enabled;
let disabled;

before(async () => {
  enabled = await startServer({ EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true' });
  disabled = await startServer({});
});

after(async () => {
  await finish(enabled, disabled);
});

test('signInAnonymously returns a session for an anonymous user', async () => {
  const client = makeClient(enabled);
  const { data, error } = await client.signInAnonymously({ options: { data: { theme: 'dark' } } });
  assert.equal(error, null);
  const s = data.session;
  assert.ok(s, 'session expected');
  assert.equal(s.token_type, 'bearer');
  assert.ok(s.refresh_token);
  assert.ok(s.expires_in > 0);
  const u = data.user;
  assert.match(u.id, UUID_RE);
  assert.equal(u.is_anonymous, true);
  assert.equal(u.email ?? '', '');
  assert.equal(u.user_metadata.theme, 'dark');
  assert.equal(u.role, 'authenticated');

  const claims = jwtPayload(s.access_token);
  assert.equal(claims.is_anonymous, true);
  assert.equal(claims.sub, u.id);
  assert.equal(claims.role, 'authenticated');
  assert.ok(Array.isArray(claims.amr) && claims.amr.some((a) => a.method === 'anonymous'),
    `amr should name "anonymous": ${JSON.stringify(claims.amr)}`);

  const me = await client.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.id, u.id);
  assert.equal(me.data.user.is_anonymous, true);

  // Anonymous sessions refresh like any other.
  const r = await refreshRaw(enabled, s.refresh_token);
  assert.equal(r.status, 200, r.text);
  assert.equal(jwtPayload(r.body.access_token).is_anonymous, true);
});

test('each anonymous sign-in creates a distinct user', async () => {
  const a = await makeClient(enabled).signInAnonymously();
  const b = await makeClient(enabled).signInAnonymously();
  assert.equal(a.error, null);
  assert.equal(b.error, null);
  assert.notEqual(a.data.user.id, b.data.user.id);
});

test('a regular user token says is_anonymous false', async () => {
  const client = makeClient(enabled);
  const { data, error } = await client.signUp({
    email: `anon-regular-${Date.now()}@example.com`,
    password: 'correct-horse-1',
  });
  assert.equal(error, null);
  assert.equal(jwtPayload(data.session.access_token).is_anonymous, false);
  assert.equal(data.user.is_anonymous, false);
});

test('anonymous sign-in when disabled gives anonymous_provider_disabled 422', async () => {
  const { data, error } = await makeClient(disabled).signInAnonymously();
  assertAuthError(error, 422, 'anonymous_provider_disabled');
  assert.equal(data.session, null);
  const raw = await api(disabled, 'POST', '/signup', { body: { data: {}, gotrue_meta_security: {} } });
  assert.equal(raw.status, 422, raw.text);
  assert.equal(raw.body.code, 'anonymous_provider_disabled');
});

test('an anonymous access token is refused by the admin API', async () => {
  const { data } = await makeClient(enabled).signInAnonymously();
  const res = await api(enabled, 'GET', '/admin/users', { token: data.session.access_token });
  assert.equal(res.status, 403, res.text);
  assert.equal(res.body.code, 'not_admin');
  const me = await getUserRaw(enabled, data.session.access_token);
  assert.equal(me.status, 200);
});
