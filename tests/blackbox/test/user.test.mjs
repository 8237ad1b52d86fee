// GET /user and PUT /user through auth-js (issue item 3).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isAuthSessionMissingError, isAuthWeakPasswordError } from '@supabase/auth-js';
import {
  startServer,
  finish,
  test,
  makeClient,
  newUser,
  signIn,
  getUserRaw,
  refreshRaw,
  assertApiError,
  assertAuthError,
  api,
  jwtPayload,
} from '../lib/server.mjs';

let server;

before(async () => {
  server = await startServer({ MAILER_AUTOCONFIRM: 'true' });
});

after(async () => {
  await finish(server);
});

test('getUser returns the signed-in user, by session and by explicit jwt', async () => {
  const { client, user, email, session } = await newUser(server, { data: { name: 'Grace' } });
  const a = await client.getUser();
  assert.equal(a.error, null);
  assert.equal(a.data.user.id, user.id);
  assert.equal(a.data.user.email, email);
  assert.equal(a.data.user.user_metadata.name, 'Grace');

  const b = await makeClient(server).getUser(session.access_token);
  assert.equal(b.error, null);
  assert.equal(b.data.user.id, user.id);

  const raw = await getUserRaw(server, session.access_token);
  assert.equal(raw.status, 200, raw.text);
  assert.equal(raw.body.id, user.id);
  assert.equal(raw.body.email, email);
  assert.equal(raw.body.aud, 'authenticated');
  assert.equal(raw.body.role, 'authenticated');
  assert.equal(raw.body.phone, '', 'phone serialises as "" when unset');
  assert.equal(raw.body.encrypted_password, undefined, 'never leak the hash');
  assert.ok(!/argon2|\$2[aby]\$/.test(raw.text), 'no password hash in the user body');
});

test('updateUser({data}) merges key by key and null deletes a key', async () => {
  const { client } = await newUser(server, { data: { keep: 'yes', drop: 1 } });
  const u1 = await client.updateUser({ data: { plan: 'pro', nested: { a: 1 } } });
  assert.equal(u1.error, null);
  assert.equal(u1.data.user.user_metadata.keep, 'yes');
  assert.equal(u1.data.user.user_metadata.drop, 1);
  assert.equal(u1.data.user.user_metadata.plan, 'pro');
  assert.deepEqual(u1.data.user.user_metadata.nested, { a: 1 });

  const u2 = await client.updateUser({ data: { drop: null, plan: 'team', extra: [1, 2] } });
  assert.equal(u2.error, null);
  const md = u2.data.user.user_metadata;
  assert.equal(md.keep, 'yes');
  assert.ok(!('drop' in md), `drop should be deleted: ${JSON.stringify(md)}`);
  assert.equal(md.plan, 'team');
  assert.deepEqual(md.nested, { a: 1 });
  assert.deepEqual(md.extra, [1, 2]);

  // Persisted: a fresh read shows the same.
  const again = await client.getUser();
  assert.deepEqual(again.data.user.user_metadata, md);
});

test('a user cannot set app_metadata through PUT /user', async () => {
  const { session } = await newUser(server);
  const res = await api(server, 'PUT', '/user', {
    token: session.access_token,
    body: { app_metadata: { role: 'admin', provider: 'evil' } },
  });
  // GoTrue ignores the field; either way it must not be applied.
  assert.ok(res.status < 500);
  const me = await getUserRaw(server, session.access_token);
  assert.equal(me.status, 200);
  assert.notEqual(me.body.app_metadata.role, 'admin');
  assert.equal(me.body.app_metadata.provider, 'email');
});

test('password change revokes the other sessions, keeps this one, and swaps the password', async () => {
  const { client: c1, email, password } = await newUser(server);
  const { client: c2, session: s2 } = await signIn(server, email, password);
  const { client: c3, session: s3 } = await signIn(server, email, password);
  const s1 = (await c1.getSession()).data.session;

  const upd = await c1.updateUser({ password: 'brand-new-pass-9' });
  assert.equal(upd.error, null);

  // Other sessions are gone.
  const g2 = await c2.getUser();
  assert.ok(isAuthSessionMissingError(g2.error), `expected AuthSessionMissingError, got ${g2.error?.name}`);
  assert.equal(g2.data.user, null);
  assertApiError(await getUserRaw(server, s2.access_token), 403, 'session_not_found');
  assertApiError(await getUserRaw(server, s3.access_token), 403, 'session_not_found');
  const r3 = await refreshRaw(server, s3.refresh_token);
  assert.equal(r3.status, 400, `refresh of a revoked session: ${r3.text}`);
  void c3;

  // The current session still works, including refresh.
  const g1 = await c1.getUser();
  assert.equal(g1.error, null);
  const r1 = await refreshRaw(server, s1.refresh_token);
  assert.equal(r1.status, 200, r1.text);

  // New password signs in, old one does not.
  const ok = await makeClient(server).signInWithPassword({ email, password: 'brand-new-pass-9' });
  assert.equal(ok.error, null);
  const old = await makeClient(server).signInWithPassword({ email, password });
  assertAuthError(old.error, 400, 'invalid_credentials');
});

test('updateUser with a weak password is refused and the old password keeps working', async () => {
  const { client, email, password } = await newUser(server);
  const { error } = await client.updateUser({ password: '123' });
  assert.ok(isAuthWeakPasswordError(error), `expected AuthWeakPasswordError, got ${error?.name} ${error?.code}`);
  assert.deepEqual(error.reasons, ['length']);
  assert.equal(error.status, 422);
  const ok = await makeClient(server).signInWithPassword({ email, password });
  assert.equal(ok.error, null);
});

test('updateUser to the same password gives same_password 422', async () => {
  const { client, password } = await newUser(server);
  const { error } = await client.updateUser({ password });
  assertAuthError(error, 422, 'same_password');
});

test('PUT /user without a token is 401 no_authorization', async () => {
  const res = await api(server, 'PUT', '/user', { body: { data: { x: 1 } } });
  assertApiError(res, 401, 'no_authorization');
});

test('updateUser({email}) with autoconfirm: the new email signs in, a taken one is email_exists 422', async () => {
  const a = await newUser(server, { prefix: 'email-change' });
  const b = await newUser(server, { prefix: 'email-taken' });
  const taken = await a.client.updateUser({ email: b.email });
  assertAuthError(taken.error, 422, 'email_exists');
  const takenCase = await a.client.updateUser({ email: b.email.toUpperCase() });
  assertAuthError(takenCase.error, 422, 'email_exists');

  const fresh = `changed-${Date.now()}@example.com`;
  const { data, error } = await a.client.updateUser({ email: fresh });
  assert.equal(error, null);
  // GoTrue applies the change at once when MAILER_AUTOCONFIRM is on (or reports it as pending
  // in new_email); either way the old address must still be usable until it is confirmed.
  if (data.user.email === fresh) {
    const ok = await makeClient(server).signInWithPassword({ email: fresh, password: a.password });
    assert.equal(ok.error, null);
    const old = await makeClient(server).signInWithPassword({ email: a.email, password: a.password });
    assertAuthError(old.error, 400, 'invalid_credentials');
  } else {
    assert.equal(data.user.new_email, fresh);
  }
});

test('user_metadata cannot inject claims: role, sub, aud, session_id stay the server\'s', async () => {
  const { client, user, session } = await newUser(server);
  const upd = await client.updateUser({
    data: { role: 'service_role', sub: '00000000-0000-4000-8000-000000000000', aud: 'evil', session_id: 'x', is_anonymous: true },
  });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.role, 'authenticated');
  const { data, error } = await client.refreshSession();
  assert.equal(error, null);
  const c = jwtPayload(data.session.access_token);
  assert.equal(c.role, 'authenticated');
  assert.equal(c.sub, user.id);
  assert.equal(c.aud, 'authenticated');
  assert.equal(c.session_id, jwtPayload(session.access_token).session_id);
  assert.equal(c.is_anonymous, false);
  assert.equal(c.user_metadata.role, 'service_role', 'the value lives inside user_metadata only');
  const adm = await api(server, 'GET', '/admin/users', { token: data.session.access_token });
  assertApiError(adm, 403, 'not_admin');
});

test('oversized metadata is refused with a 4xx, or else the resulting tokens still work', async () => {
  for (const kb of [16, 64, 512]) {
    const su = await api(server, 'POST', '/signup', {
      body: { email: `big-meta-${kb}-${Date.now()}@example.com`, password: 'correct-horse-1', data: { blob: 'z'.repeat(kb * 1024) } },
    });
    if (su.status === 200) {
      const g = await getUserRaw(server, su.body.access_token);
      assert.equal(g.status, 200, `${kb} KiB of metadata was accepted but its token is unusable: ${g.status}`);
    } else {
      assert.ok(su.status >= 400 && su.status < 500, `${kb} KiB: ${su.status} ${su.text.slice(0, 120)}`);
    }
  }
  // Growing metadata step by step through PUT /user obeys the same rule.
  const { session } = await newUser(server);
  for (let i = 0; i < 12; i++) {
    const r = await api(server, 'PUT', '/user', { token: session.access_token, body: { data: { [`p${i}`]: 'y'.repeat(4096) } } });
    if (r.status !== 200) {
      assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text.slice(0, 120)}`);
      break;
    }
  }
  const rf = await refreshRaw(server, session.refresh_token);
  assert.equal(rf.status, 200, rf.text.slice(0, 200));
  assert.equal((await getUserRaw(server, rf.body.access_token)).status, 200);
});
