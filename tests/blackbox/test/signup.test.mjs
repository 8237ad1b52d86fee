// Sign-up and password sign-in through @supabase/auth-js (issue items 1 and 2).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { isAuthWeakPasswordError } from '@supabase/auth-js';
import {
  startServer,
  finish,
  test,
  makeClient,
  adminClient,
  uniqueEmail,
  api,
  passwordRaw,
  assertAuthError,
  assertApiError,
  jwtPayload,
  UUID_RE,
} from '../lib/server.mjs';

let confirmOn; // MAILER_AUTOCONFIRM=true, JWT_EXP=600
let confirmOff; // MAILER_AUTOCONFIRM=false, PASSWORD_MIN_LENGTH=10
let noSignup; // DISABLE_SIGNUP=true

before(async () => {
  confirmOn = await startServer({ MAILER_AUTOCONFIRM: 'true', JWT_EXP: '600' });
  confirmOff = await startServer({ MAILER_AUTOCONFIRM: 'false', PASSWORD_MIN_LENGTH: '10' });
  noSignup = await startServer({ DISABLE_SIGNUP: 'true' });
});

after(async () => {
  await finish(confirmOn, confirmOff, noSignup);
});

test('signUp with autoconfirm on returns a session and a confirmed user', async () => {
  const client = makeClient(confirmOn);
  const email = uniqueEmail('signup');
  const { data, error } = await client.signUp({
    email,
    password: 'correct-horse-1',
    options: { data: { name: 'Ada', plan: 'free' } },
  });
  assert.equal(error, null);
  assert.ok(data.session, 'session expected');
  assert.equal(data.session.token_type, 'bearer');
  assert.equal(data.session.access_token.split('.').length, 3);
  assert.equal(typeof data.session.refresh_token, 'string');
  assert.ok(data.session.refresh_token.length > 0);
  assert.equal(data.session.expires_in, 600);

  const u = data.user;
  assert.match(u.id, UUID_RE);
  assert.equal(u.email, email);
  assert.equal(u.aud, 'authenticated');
  assert.equal(u.role, 'authenticated');
  assert.equal(u.is_anonymous, false);
  assert.deepEqual(u.user_metadata, { ...u.user_metadata, name: 'Ada', plan: 'free' });
  assert.equal(u.app_metadata.provider, 'email');
  assert.deepEqual(u.app_metadata.providers, ['email']);
  assert.ok(u.email_confirmed_at, 'email_confirmed_at should be set with autoconfirm');
  assert.ok(!Number.isNaN(Date.parse(u.email_confirmed_at)));
  assert.ok(!Number.isNaN(Date.parse(u.created_at)));
  assert.ok(Array.isArray(u.identities) && u.identities.length === 1, 'one email identity');
  assert.equal(u.identities[0].provider, 'email');
  assert.equal(u.identities[0].user_id, u.id);

  const claims = jwtPayload(data.session.access_token);
  assert.equal(claims.sub, u.id);
  assert.equal(claims.email, email);

  // The session works on the server.
  const me = await client.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.id, u.id);
});

test('signUp with autoconfirm off returns a bare user; password sign-in says email_not_confirmed', async () => {
  const client = makeClient(confirmOff);
  const email = uniqueEmail('unconfirmed');
  const { data, error } = await client.signUp({ email, password: 'correct-horse-1' });
  assert.equal(error, null);
  assert.equal(data.session, null);
  assert.ok(data.user, 'user expected');
  assert.match(data.user.id, UUID_RE);
  assert.equal(data.user.email, email);
  assert.ok(!data.user.email_confirmed_at, 'email must not be confirmed');

  // Raw: the body is a bare User (no access_token).
  const raw = await api(confirmOff, 'POST', '/signup', {
    body: { email: uniqueEmail('unconfirmed-raw'), password: 'correct-horse-1', data: {} },
  });
  assert.equal(raw.status, 200, raw.text);
  assert.equal(raw.body.access_token, undefined);
  assert.match(raw.body.id, UUID_RE);

  const signin = await makeClient(confirmOff).signInWithPassword({ email, password: 'correct-horse-1' });
  assertAuthError(signin.error, 400, 'email_not_confirmed');
  assert.equal(signin.data.session, null);
});

test('duplicate signUp with autoconfirm on gives user_already_exists 422', async () => {
  const email = uniqueEmail('dup');
  const first = await makeClient(confirmOn).signUp({ email, password: 'correct-horse-1' });
  assert.equal(first.error, null);
  const again = await makeClient(confirmOn).signUp({ email, password: 'another-pass-2' });
  assertAuthError(again.error, 422, 'user_already_exists');
  assert.equal(again.data.session, null);
  // The original password still works, the second one was not stored.
  const ok = await makeClient(confirmOn).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(ok.error, null);
  const bad = await makeClient(confirmOn).signInWithPassword({ email, password: 'another-pass-2' });
  assertAuthError(bad.error, 400, 'invalid_credentials');
});

test('signUp of a confirmed email with autoconfirm off returns an obfuscated user, no error', async () => {
  const email = uniqueEmail('confirmed-dup');
  const created = await adminClient(confirmOff).admin.createUser({
    email,
    password: 'correct-horse-1',
    email_confirm: true,
  });
  assert.equal(created.error, null);
  const { data, error } = await makeClient(confirmOff).signUp({ email, password: 'whatever-pass-3' });
  assert.equal(error, null);
  assert.equal(data.session, null);
  assert.ok(data.user);
  assert.notEqual(data.user.id, created.data.user.id, 'must not leak the real user id');
  assert.deepEqual(data.user.identities, []);
  // And the real account is untouched.
  const ok = await makeClient(confirmOff).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(ok.error, null);
});

test('weak password (< 6 chars) gives AuthWeakPasswordError with reasons ["length"]', async () => {
  const { data, error } = await makeClient(confirmOn).signUp({
    email: uniqueEmail('weak'),
    password: 'abc',
  });
  assert.ok(isAuthWeakPasswordError(error), `expected AuthWeakPasswordError, got ${error?.name}`);
  assert.deepEqual(error.reasons, ['length']);
  assert.equal(error.status, 422);
  assert.equal(error.code, 'weak_password');
  assert.equal(data.user, null);

  // Raw shape: weak_password.reasons in the body.
  const raw = await api(confirmOn, 'POST', '/signup', {
    body: { email: uniqueEmail('weak-raw'), password: '12345' },
  });
  assertApiError(raw, 422, 'weak_password');
  assert.deepEqual(raw.body.weak_password?.reasons, ['length']);

  // Exactly 6 characters is enough.
  const six = await makeClient(confirmOn).signUp({ email: uniqueEmail('six'), password: '123456' });
  assert.equal(six.error, null);
  assert.ok(six.data.session);
});

test('DISABLE_SIGNUP gives signup_disabled 422, while admin.createUser still works', async () => {
  const email = uniqueEmail('disabled');
  const { data, error } = await makeClient(noSignup).signUp({ email, password: 'correct-horse-1' });
  assertAuthError(error, 422, 'signup_disabled');
  assert.equal(data.session, null);

  const created = await adminClient(noSignup).admin.createUser({
    email,
    password: 'correct-horse-1',
    email_confirm: true,
  });
  assert.equal(created.error, null);
  const signin = await makeClient(noSignup).signInWithPassword({ email, password: 'correct-horse-1' });
  assert.equal(signin.error, null);
  assert.equal(signin.data.user.id, created.data.user.id);
});

test('signup with malformed input is a 4xx JSON error', async () => {
  const noPassword = await api(confirmOn, 'POST', '/signup', { body: { email: uniqueEmail('nopw') } });
  assert.ok([400, 422].includes(noPassword.status), `no password: ${noPassword.status} ${noPassword.text}`);
  assert.equal(typeof noPassword.body?.code, 'string');

  const badEmail = await api(confirmOn, 'POST', '/signup', {
    body: { email: 'not-an-email', password: 'correct-horse-1' },
  });
  assert.ok([400, 422].includes(badEmail.status), `bad email: ${badEmail.status} ${badEmail.text}`);
  assert.equal(typeof badEmail.body?.code, 'string');

  const wrongType = await api(confirmOn, 'POST', '/signup', {
    body: { email: 42, password: ['x'] },
  });
  assert.ok([400, 422].includes(wrongType.status), `wrong types: ${wrongType.status} ${wrongType.text}`);
});

// ---- Password sign-in (item 2) ----

test('signInWithPassword returns a complete session', async () => {
  const email = uniqueEmail('signin');
  const password = 'correct-horse-1';
  const su = await makeClient(confirmOn).signUp({ email, password });
  assert.equal(su.error, null);

  const client = makeClient(confirmOn);
  const before = Math.floor(Date.now() / 1000);
  const { data, error } = await client.signInWithPassword({ email, password });
  assert.equal(error, null);
  const s = data.session;
  assert.equal(s.access_token.split('.').length, 3);
  assert.equal(typeof s.refresh_token, 'string');
  assert.ok(s.refresh_token.length >= 12);
  assert.equal(s.expires_in, 600);
  assert.equal(typeof s.expires_at, 'number');
  assert.ok(s.expires_at >= before + 600 - 5 && s.expires_at <= before + 600 + 120, `expires_at ${s.expires_at}`);
  assert.equal(s.token_type, 'bearer');
  assert.equal(s.user.id, su.data.user.id);
  assert.equal(s.user.email, email);
  assert.ok(s.user.last_sign_in_at, 'last_sign_in_at set');
  assert.equal(data.user.id, su.data.user.id);

  const claims = jwtPayload(s.access_token);
  assert.equal(claims.exp - claims.iat, 600);
  assert.equal(claims.sub, su.data.user.id);
  assert.notEqual(claims.session_id, jwtPayload(su.data.session.access_token).session_id,
    'each login is a new session');

  // The server itself sends expires_at (auth-js would otherwise compute it).
  const raw = await passwordRaw(confirmOn, email, password);
  assert.equal(raw.status, 200, raw.text);
  for (const k of ['access_token', 'refresh_token', 'expires_in', 'expires_at', 'token_type', 'user']) {
    assert.ok(raw.body[k] !== undefined && raw.body[k] !== null, `raw session lacks ${k}`);
  }
  assert.equal(raw.body.token_type, 'bearer');
  assert.equal(raw.body.expires_at, jwtPayload(raw.body.access_token).exp);
});

test('wrong password and unknown email both give invalid_credentials 400 with the same message', async () => {
  const email = uniqueEmail('creds');
  const su = await makeClient(confirmOn).signUp({ email, password: 'correct-horse-1' });
  assert.equal(su.error, null);

  const wrong = await makeClient(confirmOn).signInWithPassword({ email, password: 'wrong-horse-1' });
  assertAuthError(wrong.error, 400, 'invalid_credentials');
  assert.equal(wrong.data.session, null);

  const unknown = await makeClient(confirmOn).signInWithPassword({
    email: uniqueEmail('nobody'),
    password: 'correct-horse-1',
  });
  assertAuthError(unknown.error, 400, 'invalid_credentials');
  assert.equal(unknown.error.message, wrong.error.message);

  // Raw bodies are identical too.
  const r1 = await passwordRaw(confirmOn, email, 'wrong-horse-1');
  const r2 = await passwordRaw(confirmOn, uniqueEmail('nobody'), 'wrong-horse-1');
  assertApiError(r1, 400, 'invalid_credentials');
  assertApiError(r2, 400, 'invalid_credentials');
  assert.deepEqual(r1.body, r2.body);
});

test('password grant edge cases are 400, not 5xx', async () => {
  const badGrant = await api(confirmOn, 'POST', '/token?grant_type=bogus', {
    body: { email: uniqueEmail('g'), password: 'x' },
  });
  assert.equal(badGrant.status, 400, badGrant.text);
  const noGrant = await api(confirmOn, 'POST', '/token', { body: { email: uniqueEmail('g'), password: 'x' } });
  assert.equal(noGrant.status, 400, noGrant.text);
  const noPassword = await api(confirmOn, 'POST', '/token?grant_type=password', {
    body: { email: uniqueEmail('g') },
  });
  assert.equal(noPassword.status, 400, noPassword.text);
  const empty = await passwordRaw(confirmOn, '', '');
  assert.equal(empty.status, 400, empty.text);
});

test('PASSWORD_MIN_LENGTH raises the floor', async () => {
  const nine = await makeClient(confirmOff).signUp({ email: uniqueEmail('min10'), password: '123456789' });
  assert.ok(isAuthWeakPasswordError(nine.error), `expected AuthWeakPasswordError, got ${nine.error?.name}`);
  assert.deepEqual(nine.error.reasons, ['length']);
  const ten = await makeClient(confirmOff).signUp({ email: uniqueEmail('min10'), password: '1234567890' });
  assert.equal(ten.error, null);
});

test('emails are case-insensitive: duplicate detection and sign-in', async () => {
  const local = `Case-${Date.now()}`;
  const mixed = `${local}@Example.COM`;
  const lower = mixed.toLowerCase();
  const su = await makeClient(confirmOn).signUp({ email: mixed, password: 'correct-horse-1' });
  assert.equal(su.error, null);
  assert.equal(su.data.user.email, lower, 'stored lower-cased, like GoTrue');
  const dup = await makeClient(confirmOn).signUp({ email: lower, password: 'correct-horse-1' });
  assertAuthError(dup.error, 422, 'user_already_exists');
  const si = await makeClient(confirmOn).signInWithPassword({ email: lower.toUpperCase(), password: 'correct-horse-1' });
  assert.equal(si.error, null);
  assert.equal(si.data.user.id, su.data.user.id);
});

test('ten concurrent signups of one email: exactly one wins, the rest are user_already_exists', async () => {
  const email = uniqueEmail('race');
  const results = await Promise.all(
    Array.from({ length: 10 }, () =>
      api(confirmOn, 'POST', '/signup', { body: { email, password: 'correct-horse-1' } })),
  );
  const statuses = results.map((r) => r.status).sort();
  assert.deepEqual(statuses, [200, ...Array(9).fill(422)], results.map((r) => r.text).join('\n'));
  for (const r of results.filter((x) => x.status === 422)) assert.equal(r.body.code, 'user_already_exists');
  const list = await api(confirmOn, 'GET', '/admin/users?per_page=1000', { token: confirmOn.serviceKey });
  assert.equal(list.body.users.filter((u) => u.email === email).length, 1);
});

test('a PKCE-flow client (as @supabase/ssr uses) can sign up, with a redirect', async () => {
  for (const [srv, expectSession] of [[confirmOn, true], [confirmOff, false]]) {
    const c = makeClient(srv, { flowType: 'pkce' });
    const email = uniqueEmail('pkce');
    const { data, error } = await c.signUp({
      email,
      password: 'correct-horse-12',
      options: { emailRedirectTo: 'http://localhost:3000/welcome', data: { via: 'pkce' } },
    });
    assert.equal(error, null, error?.message);
    assert.equal(Boolean(data.session), expectSession);
    assert.equal(data.user.email, email);
    assert.equal(data.user.user_metadata.via, 'pkce');
  }
});
