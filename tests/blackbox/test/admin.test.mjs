// Admin API through GoTrueClient.admin with the service_role key (issue item 7).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  makeClient,
  adminClient,
  uniqueEmail,
  newUser,
  signIn,
  getUserRaw,
  refreshRaw,
  assertApiError,
  assertAuthError,
  api,
  jwtPayload,
  UUID_RE,
} from '../lib/server.mjs';

let server; // used by the pagination test only, so the user count is exact
let other; // everything else

before(async () => {
  server = await startServer({});
  other = await startServer({});
});

after(async () => {
  await finish(server, other);
});

test('the anon and service_role keys are JWTs with a role and no sub', async () => {
  const anon = jwtPayload(server.anonKey);
  const service = jwtPayload(server.serviceKey);
  assert.equal(anon.role, 'anon');
  assert.equal(service.role, 'service_role');
  assert.equal(anon.sub, undefined);
  assert.equal(service.sub, undefined);
});

test('listUsers paginates with page/perPage, X-Total-Count and Link', async () => {
  const admin = adminClient(server).admin;
  const emails = [];
  for (let i = 0; i < 5; i++) {
    const email = uniqueEmail(`list${i}`);
    const { error } = await admin.createUser({ email, password: 'correct-horse-1', email_confirm: true });
    assert.equal(error, null);
    emails.push(email);
  }

  const all = await admin.listUsers();
  assert.equal(all.error, null);
  assert.equal(all.data.users.length, 5);
  assert.deepEqual(all.data.users.map((u) => u.email).sort(), [...emails].sort());
  assert.equal(all.data.aud, 'authenticated');

  const seen = [];
  const p1 = await admin.listUsers({ page: 1, perPage: 2 });
  assert.equal(p1.error, null);
  assert.equal(p1.data.users.length, 2);
  assert.equal(p1.data.total, 5);
  assert.equal(p1.data.nextPage, 2);
  assert.equal(p1.data.lastPage, 3);
  seen.push(...p1.data.users.map((u) => u.id));

  const p2 = await admin.listUsers({ page: 2, perPage: 2 });
  assert.equal(p2.data.users.length, 2);
  assert.equal(p2.data.nextPage, 3);
  assert.equal(p2.data.lastPage, 3);
  seen.push(...p2.data.users.map((u) => u.id));

  const p3 = await admin.listUsers({ page: 3, perPage: 2 });
  assert.equal(p3.data.users.length, 1);
  assert.equal(p3.data.nextPage, null, 'no next page on the last page');
  assert.equal(p3.data.total, 5);
  seen.push(...p3.data.users.map((u) => u.id));

  assert.equal(new Set(seen).size, 5, 'pages do not overlap and cover all users');

  const beyond = await admin.listUsers({ page: 9, perPage: 2 });
  assert.equal(beyond.error, null);
  assert.deepEqual(beyond.data.users, []);

  // Raw headers.
  const raw = await api(server, 'GET', '/admin/users?page=1&per_page=2', { token: server.serviceKey });
  assert.equal(raw.status, 200, raw.text);
  assert.equal(raw.headers.get('x-total-count'), '5');
  const link = raw.headers.get('link');
  assert.ok(link, 'Link header expected');
  const parts = link.split(',').map((p) => p.trim());
  const rels = {};
  for (const p of parts) {
    const m = /^<([^>]*)>;\s*rel="(\w+)"$/.exec(p);
    assert.ok(m, `malformed Link part: ${p}`);
    const u = new URL(m[1], server.url);
    assert.match(u.search, /^\?page=\d+&/, `page must be the first query parameter: ${m[1]}`);
    assert.equal(u.searchParams.get('per_page'), '2');
    rels[m[2]] = Number(u.searchParams.get('page'));
  }
  assert.equal(rels.next, 2);
  assert.equal(rels.last, 3);

  const rawLast = await api(server, 'GET', '/admin/users?page=3&per_page=2', { token: server.serviceKey });
  assert.equal(rawLast.status, 200);
  assert.equal(rawLast.body.users.length, 1);
  assert.ok(!/rel="next"/.test(rawLast.headers.get('link') ?? ''), 'no rel=next on the last page');
});

test('createUser honours email_confirm, password, user_metadata and app_metadata', async () => {
  const admin = adminClient(other).admin;
  const email = uniqueEmail('created');
  const { data, error } = await admin.createUser({
    email,
    password: 'correct-horse-1',
    email_confirm: true,
    user_metadata: { name: 'Linus' },
    app_metadata: { plan: 'enterprise' },
  });
  assert.equal(error, null);
  const u = data.user;
  assert.match(u.id, UUID_RE);
  assert.equal(u.email, email);
  assert.ok(u.email_confirmed_at, 'email_confirm → email_confirmed_at');
  assert.equal(u.user_metadata.name, 'Linus');
  assert.equal(u.app_metadata.plan, 'enterprise');
  assert.equal(u.app_metadata.provider, 'email');

  const s = await makeClient(other).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(s.error, null);
  const claims = jwtPayload(s.data.session.access_token);
  assert.equal(claims.app_metadata.plan, 'enterprise');
  assert.equal(claims.user_metadata.name, 'Linus');

  const got = await admin.getUserById(u.id);
  assert.equal(got.error, null);
  assert.equal(got.data.user.id, u.id);
  assert.equal(got.data.user.email, email);
  assert.equal(got.data.user.app_metadata.plan, 'enterprise');
});

test('createUser without email_confirm leaves the email unconfirmed', async () => {
  const admin = adminClient(other).admin;
  const email = uniqueEmail('unconfirmed');
  const { data, error } = await admin.createUser({ email, password: 'correct-horse-1' });
  assert.equal(error, null);
  assert.ok(!data.user.email_confirmed_at);
  const s = await makeClient(other).signInWithPassword({ email, password: 'correct-horse-1' });
  assertAuthError(s.error, 400, 'email_not_confirmed');
});

test('createUser with an existing email is a 422', async () => {
  const admin = adminClient(other).admin;
  const email = uniqueEmail('exists');
  assert.equal((await admin.createUser({ email, password: 'correct-horse-1', email_confirm: true })).error, null);
  const { error } = await admin.createUser({ email, password: 'correct-horse-1' });
  assert.ok(error);
  assert.equal(error.status, 422);
  assert.ok(['email_exists', 'user_already_exists'].includes(error.code), error.code);
});

test('getUserById of an unknown id is 404 user_not_found', async () => {
  const { data, error } = await adminClient(other).admin.getUserById('00000000-0000-4000-8000-000000000000');
  assertAuthError(error, 404, 'user_not_found');
  assert.equal(data.user, null);
});

test('updateUserById changes user_metadata', async () => {
  const admin = adminClient(other).admin;
  const { user, session } = await newUser(other, { data: { a: 1 } });
  const { data, error } = await admin.updateUserById(user.id, { user_metadata: { b: 2 } });
  assert.equal(error, null);
  assert.equal(data.user.user_metadata.b, 2);
  assert.equal(data.user.user_metadata.a, 1, 'admin updates merge into user_metadata like PUT /user');
  const me = await getUserRaw(other, session.access_token);
  assert.equal(me.status, 200);
  assert.equal(me.body.user_metadata.b, 2);
  assert.equal(me.body.user_metadata.a, 1);
});

test('ban_duration "24h" bans (sign-in user_banned, sessions cut), "none" unbans', async () => {
  const admin = adminClient(other).admin;
  const { user, email, password, session } = await newUser(other);

  const ban = await admin.updateUserById(user.id, { ban_duration: '24h' });
  assert.equal(ban.error, null);
  const until = Date.parse(ban.data.user.banned_until);
  assert.ok(until > Date.now() + 23 * 3600e3 && until < Date.now() + 25 * 3600e3,
    `banned_until ${ban.data.user.banned_until}`);

  const s = await makeClient(other).signInWithPassword({ email, password });
  assertAuthError(s.error, 400, 'user_banned');
  assert.equal(s.data.session, null);

  // Banning kills the existing session at once (SPEC §6).
  const g = await getUserRaw(other, session.access_token);
  assert.equal(g.status, 403, `banned user's old token: ${g.text}`);
  const r = await refreshRaw(other, session.refresh_token);
  assert.equal(r.status, 400, `banned user's refresh token: ${r.text}`);

  const unban = await admin.updateUserById(user.id, { ban_duration: 'none' });
  assert.equal(unban.error, null);
  assert.ok(!unban.data.user.banned_until || Date.parse(unban.data.user.banned_until) <= Date.now(),
    `banned_until after unban: ${unban.data.user.banned_until}`);
  const again = await makeClient(other).signInWithPassword({ email, password });
  assert.equal(again.error, null);
});

test('an invalid ban_duration is a 400', async () => {
  const { user } = await newUser(other);
  const { error } = await adminClient(other).admin.updateUserById(user.id, { ban_duration: 'forever-ish' });
  assert.ok(error, 'expected an error');
  assert.equal(error.status, 400);
});

test('deleteUser kills the user\'s sessions at once', async () => {
  const admin = adminClient(other).admin;
  const { user, email, password, session } = await newUser(other);
  const second = await signIn(other, email, password);

  const { error } = await admin.deleteUser(user.id);
  assert.equal(error, null);

  for (const s of [session, second.session]) {
    const g = await getUserRaw(other, s.access_token);
    assert.equal(g.status, 403, g.text);
    assert.ok(['user_not_found', 'session_not_found'].includes(g.body?.code), g.text);
    const r = await refreshRaw(other, s.refresh_token);
    assert.equal(r.status, 400, r.text);
  }
  const got = await admin.getUserById(user.id);
  assertAuthError(got.error, 404, 'user_not_found');
  const signin = await makeClient(other).signInWithPassword({ email, password });
  assertAuthError(signin.error, 400, 'invalid_credentials');

  // The email is free again, and the new account does not revive the old tokens.
  const re = await makeClient(other).signUp({ email, password });
  assert.equal(re.error, null);
  assert.notEqual(re.data.user.id, user.id);
  assert.equal((await getUserRaw(other, session.access_token)).status, 403);

  const del2 = await admin.deleteUser(user.id);
  assertAuthError(del2.error, 404, 'user_not_found');
});

test('admin endpoints: user token or anon key → 403 not_admin; no token → 401 no_authorization', async () => {
  const { session, user } = await newUser(other);
  const paths = [
    ['GET', '/admin/users'],
    ['POST', '/admin/users', { email: uniqueEmail('x'), password: 'correct-horse-1' }],
    ['GET', `/admin/users/${user.id}`],
    ['PUT', `/admin/users/${user.id}`, { user_metadata: { hacked: true } }],
    ['DELETE', `/admin/users/${user.id}`, { should_soft_delete: false }],
  ];
  for (const [method, path, body] of paths) {
    const asUser = await api(other, method, path, { token: session.access_token, body });
    assertApiError(asUser, 403, 'not_admin');
    const asAnon = await api(other, method, path, { token: other.anonKey, body });
    assertApiError(asAnon, 403, 'not_admin');
    const none = await api(other, method, path, { body });
    assertApiError(none, 401, 'no_authorization');
  }
  // Nothing happened to the user.
  const me = await getUserRaw(other, session.access_token);
  assert.equal(me.status, 200);
  assert.equal(me.body.user_metadata.hacked, undefined);

  // Through auth-js: an anon-keyed client's admin API is refused.
  const anonAdmin = makeClient(other).admin;
  const { error } = await anonAdmin.listUsers();
  assertAuthError(error, 403, 'not_admin');
  const userAdmin = makeClient(other, { key: session.access_token }).admin;
  const r2 = await userAdmin.listUsers();
  assertAuthError(r2.error, 403, 'not_admin');
});

test('updateUserById can set a new password and app_metadata', async () => {
  const admin = adminClient(other).admin;
  const { user, email, password } = await newUser(other);
  const { data, error } = await admin.updateUserById(user.id, {
    password: 'admin-set-pass-7',
    app_metadata: { tier: 'gold' },
  });
  assert.equal(error, null);
  assert.equal(data.user.app_metadata.tier, 'gold');
  assert.equal(data.user.app_metadata.provider, 'email', 'provider survives an app_metadata update');
  const ok = await makeClient(other).signInWithPassword({ email, password: 'admin-set-pass-7' });
  assert.equal(ok.error, null);
  assert.equal(jwtPayload(ok.data.session.access_token).app_metadata.tier, 'gold');
  const old = await makeClient(other).signInWithPassword({ email, password });
  assertAuthError(old.error, 400, 'invalid_credentials');
});

test('admin routes with a malformed user id are 4xx, not 5xx', async () => {
  for (const id of ['not-a-uuid', '123', '00000000-0000-0000-0000-00000000000g', 'a'.repeat(300)]) {
    const res = await api(other, 'GET', `/admin/users/${id}`, { token: other.serviceKey });
    assert.ok([400, 404].includes(res.status), `${id}: ${res.status} ${res.text}`);
  }
  for (const q of ['page=-1', 'page=abc&per_page=xyz', 'per_page=0', 'per_page=100000000', 'page=99999999999999999999']) {
    const res = await api(other, 'GET', `/admin/users?${q}`, { token: other.serviceKey });
    assert.ok(res.status === 200 || res.status === 400, `${q}: ${res.status} ${res.text}`);
  }
});

test('createUser with password_hash imports bcrypt ($2a$/$2b$/$2y$) and argon2id hashes', async () => {
  const admin = adminClient(other).admin;
  // Precomputed with libxcrypt / libsodium for the passwords named below.
  const cases = [
    ['imported-pass-1', '$2b$10$abcdefghijklmnopqrstuuX/sm/HX.CJ5Jh5j7uyqiffnTl6O4vQS'],
    ['imported-pass-1', '$2a$04$abcdefghijklmnopqrstuupp9sWqHGpOuKsRA9zMuWRbNeYeWahBS'],
    ['imported-pass-1', '$2y$04$abcdefghijklmnopqrstuupp9sWqHGpOuKsRA9zMuWRbNeYeWahBS'],
    ['imported-pass-2', '$argon2id$v=19$m=1024,t=2,p=1$dXGG85zcm1i3cUJsQuphHg$/gEKcLguoC/ELFF4tBVfopi3Tvk9R7et8bz+xAbdSDQ'],
  ];
  for (const [password, hash] of cases) {
    const email = uniqueEmail('imported');
    const { error } = await admin.createUser({ email, password_hash: hash, email_confirm: true });
    assert.equal(error, null, `${hash.slice(0, 7)}: ${error?.message}`);
    const ok = await makeClient(other).signInWithPassword({ email, password });
    assert.equal(ok.error, null, `${hash.slice(0, 7)} sign-in: ${ok.error?.code}`);
    const bad = await makeClient(other).signInWithPassword({ email, password: `${password}x` });
    assertAuthError(bad.error, 400, 'invalid_credentials');
    // After the rehash on login the password keeps working.
    const again = await makeClient(other).signInWithPassword({ email, password });
    assert.equal(again.error, null);
  }
  const junk = await admin.createUser({ email: uniqueEmail('junk-hash'), password_hash: 'not-a-hash' });
  assert.ok(junk.error, 'an unrecognised password_hash is refused');
  assert.ok(junk.error.status >= 400 && junk.error.status < 500, `status ${junk.error.status}`);
});

test('createUser with an explicit id; a re-created id does not revive old tokens', async () => {
  const admin = adminClient(other).admin;
  const id = '4b1c8f5e-2d3a-4c6b-9e7f-0a1b2c3d4e5f';
  const email = uniqueEmail('fixed-id');
  const created = await admin.createUser({ id, email, password: 'correct-horse-1', email_confirm: true });
  assert.equal(created.error, null);
  assert.equal(created.data.user.id, id);
  const s = await makeClient(other).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(s.error, null);
  assert.equal((await admin.deleteUser(id)).error, null);

  const again = await admin.createUser({ id, email, password: 'correct-horse-1', email_confirm: true });
  assert.equal(again.error, null);
  assert.equal(again.data.user.id, id);
  const g = await getUserRaw(other, s.data.session.access_token);
  assert.equal(g.status, 403, `old token after re-creation: ${g.text}`);
  assert.equal((await refreshRaw(other, s.data.session.refresh_token)).status, 400);
  // The new account works on its own.
  const fresh = await makeClient(other).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(fresh.error, null);
});

test('signing in with a password below the current policy returns weak_password with the session', async () => {
  // An imported hash of "abc12" (5 characters, under PASSWORD_MIN_LENGTH=6).
  const email = uniqueEmail('weak-import');
  const { error } = await adminClient(other).admin.createUser({
    email,
    password_hash: '$2b$04$abcdefghijklmnopqrstuuJmzHF9IZOvqRPga2623qxrPxSP2Crqa',
    email_confirm: true,
  });
  assert.equal(error, null);
  const { data, error: e2 } = await makeClient(other).signInWithPassword({ email, password: 'abc12' });
  assert.equal(e2, null);
  assert.ok(data.session, 'the sign-in itself succeeds');
  assert.ok(data.weakPassword, 'weak_password is reported alongside the session');
  assert.deepEqual(data.weakPassword.reasons, ['length']);
});
