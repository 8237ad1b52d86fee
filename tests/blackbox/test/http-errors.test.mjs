// Raw HTTP error paths, error body shapes, token forgery, CORS (issue item 10).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import {
  startServer,
  finish,
  test,
  newUser,
  uniqueEmail,
  api,
  rawHttp,
  getUserRaw,
  passwordRaw,
  assertApiError,
  jwtPayload,
} from '../lib/server.mjs';

const SECRET = 'http-errors-secret-0123456789-abcdefghijklmnopq';
const key = (s) => new TextEncoder().encode(s);

let server; // HS256 so tests can mint tokens
let victim; // a user with a live session on `server`

before(async () => {
  server = await startServer({ JWT_SECRET: SECRET });
  victim = await newUser(server, { prefix: 'victim' });
});

after(async () => {
  await finish(server);
});

function sign(claims, { secret = SECRET, header = {} } = {}) {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...header }).sign(key(secret));
}

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

// ---- Bodies ----

test('bad JSON body → 400 bad_json', async () => {
  for (const [path, rawBody] of [
    ['/signup', '{"email": "a@example.com", "password": '],
    ['/token?grant_type=password', '{not json'],
    ['/token?grant_type=refresh_token', '[1,2'],
  ]) {
    const res = await api(server, 'POST', path, {
      rawBody,
      headers: { 'Content-Type': 'application/json' },
    });
    assertApiError(res, 400, 'bad_json');
  }
  const put = await api(server, 'PUT', '/user', {
    token: victim.session.access_token,
    rawBody: '{"data": {',
    headers: { 'Content-Type': 'application/json' },
  });
  assertApiError(put, 400, 'bad_json');
});

test('empty body on POST /signup → 400', async () => {
  const res = await api(server, 'POST', '/signup', { rawBody: '', headers: { 'Content-Type': 'application/json' } });
  assert.equal(res.status, 400, res.text);
  assert.equal(res.body?.code, 'bad_json', res.text);
  const none = await rawHttp(server, 'POST', '/signup', {
    headers: { 'Content-Type': 'application/json', 'X-Supabase-Api-Version': '2024-01-01' },
  });
  assert.equal(none.status, 400, none.text);
});

test('a JSON body that is not an object is a 400', async () => {
  for (const rawBody of ['[]', '"str"', '42', 'null']) {
    const res = await api(server, 'POST', '/token?grant_type=password', {
      rawBody,
      headers: { 'Content-Type': 'application/json' },
    });
    assert.equal(res.status, 400, `${rawBody}: ${res.status} ${res.text}`);
  }
});

test('body over 1 MiB → 413 (Content-Length and chunked)', async () => {
  const big = `{"email":"big@example.com","password":"${'x'.repeat(1024 * 1024 + 100)}"}`;
  const byLength = await rawHttp(server, 'POST', '/signup', {
    headers: {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(big),
      'X-Supabase-Api-Version': '2024-01-01',
    },
    body: big,
  });
  assert.equal(byLength.status, 413, byLength.text);

  const chunk = 'x'.repeat(64 * 1024);
  const chunks = ['{"email":"big@example.com","password":"'];
  for (let i = 0; i < 20; i++) chunks.push(chunk);
  chunks.push('"}');
  const chunked = await rawHttp(server, 'POST', '/signup', {
    headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
    chunks,
  });
  assert.equal(chunked.status, 413, chunked.text);

  // The server is fine afterwards.
  assert.equal((await api(server, 'GET', '/health')).status, 200);
});

test('a body just under 1 MiB is read (and refused on its merits, not its size)', async () => {
  const body = JSON.stringify({ email: uniqueEmail('near'), password: 'correct-horse-1', data: { pad: 'y'.repeat(1000 * 1000) } });
  assert.ok(Buffer.byteLength(body) < 1024 * 1024);
  const res = await api(server, 'POST', '/token?grant_type=password', {
    rawBody: body,
    headers: { 'Content-Type': 'application/json' },
  });
  assertApiError(res, 400, 'invalid_credentials');
});

test('non-JSON content type is a 4xx JSON error', async () => {
  const form = await api(server, 'POST', '/token?grant_type=password', {
    rawBody: `email=${encodeURIComponent(victim.email)}&password=${victim.password}`,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  });
  assert.ok([400, 415].includes(form.status), `form body: ${form.status} ${form.text}`);
  assert.equal(typeof form.body?.code, 'string', form.text);
  assert.equal(form.body.access_token, undefined);

  const xml = await api(server, 'POST', '/signup', {
    rawBody: '<signup><email>x@example.com</email></signup>',
    headers: { 'Content-Type': 'application/xml' },
  });
  assert.ok([400, 415].includes(xml.status), `xml body: ${xml.status} ${xml.text}`);
  assert.equal(typeof xml.body?.code, 'string', xml.text);
});

// ---- Tokens ----

test('forged token (signed with another secret) → 403 bad_jwt', async () => {
  const t = await sign(jwtPayload(victim.session.access_token), { secret: `${SECRET}-not-the-one` });
  assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
});

test('expired token → 403 bad_jwt', async () => {
  const claims = jwtPayload(victim.session.access_token);
  const now = Math.floor(Date.now() / 1000);
  const t = await sign({ ...claims, iat: now - 7200, exp: now - 3600 });
  assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
  // Sanity: the same claims with a valid exp are accepted, so the refusal was the expiry.
  const ok = await sign({ ...claims, iat: now, exp: now + 600 });
  assert.equal((await getUserRaw(server, ok)).status, 200);
});

test('tampered payload → 403 bad_jwt', async () => {
  const [h, , s] = victim.session.access_token.split('.');
  const claims = jwtPayload(victim.session.access_token);
  for (const change of [{ role: 'service_role' }, { email: 'attacker@example.com' }, { exp: claims.exp + 1 }]) {
    const t = `${h}.${b64({ ...claims, ...change })}.${s}`;
    assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
  }
  // Tampered admin call with a "service_role" payload on the user's signature.
  const t = `${h}.${b64({ ...claims, role: 'service_role' })}.${s}`;
  const adm = await api(server, 'GET', '/admin/users', { token: t });
  assert.equal(adm.status, 403, adm.text);
});

test('alg none → 403', async () => {
  const claims = jwtPayload(victim.session.access_token);
  for (const alg of ['none', 'None', 'NONE']) {
    const t = `${b64({ alg, typ: 'JWT' })}.${b64(claims)}.`;
    const res = await getUserRaw(server, t);
    assertApiError(res, 403, 'bad_jwt');
  }
  const adm = await api(server, 'GET', '/admin/users', {
    token: `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ role: 'service_role', iss: 'tessera' })}.`,
  });
  assert.equal(adm.status, 403, adm.text);
});

test('foreign issuer or audience → 403', async () => {
  const claims = jwtPayload(victim.session.access_token);
  const iss = await sign({ ...claims, iss: 'https://evil.example.com' });
  assertApiError(await getUserRaw(server, iss), 403, 'bad_jwt');
  const aud = await sign({ ...claims, aud: 'some-other-api' });
  assert.equal((await getUserRaw(server, aud)).status, 403);
});

test('garbage bearer tokens → 403 bad_jwt', async () => {
  for (const t of ['abc', 'a.b.c', 'eyJhbGciOiJIUzI1NiJ9..', '...', `${'A'.repeat(5000)}.x.y`]) {
    assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
  }
});

test('a service_role token signed with the right secret is admin; the same with role anon is not', async () => {
  const base = jwtPayload(server.serviceKey);
  const svc = await sign({ ...base, blackbox: true });
  const ok = await api(server, 'GET', '/admin/users', { token: svc });
  assert.equal(ok.status, 200, ok.text);
  const anon = await sign({ ...base, role: 'anon' });
  assertApiError(await api(server, 'GET', '/admin/users', { token: anon }), 403, 'not_admin');
});

test('token of a deleted session → 403 session_not_found', async () => {
  const u = await newUser(server, { prefix: 'gone' });
  const out = await api(server, 'POST', '/logout', { token: u.session.access_token });
  assert.equal(out.status, 204);
  assertApiError(await getUserRaw(server, u.session.access_token), 403, 'session_not_found');
  // Re-signing the same claims with the real secret does not bring the session back.
  const resigned = await sign(jwtPayload(u.session.access_token));
  assertApiError(await getUserRaw(server, resigned), 403, 'session_not_found');
  // A made-up session id for a real user is just as dead.
  const madeUp = await sign({ ...jwtPayload(victim.session.access_token), session_id: '00000000-0000-4000-8000-000000000001' });
  assertApiError(await getUserRaw(server, madeUp), 403, 'session_not_found');
});

test('missing or non-Bearer Authorization on GET /user → 401 no_authorization', async () => {
  assertApiError(await api(server, 'GET', '/user'), 401, 'no_authorization');
  assertApiError(await api(server, 'GET', '/user', { auth: 'Basic dXNlcjpwYXNz' }), 401, 'no_authorization');
  const empty = await api(server, 'GET', '/user', { auth: 'Bearer ' });
  assert.ok([401, 403].includes(empty.status), `empty bearer: ${empty.status} ${empty.text}`);
  // The victim is still fine after all of the above.
  assert.equal((await getUserRaw(server, victim.session.access_token)).status, 200);
});

// ---- Routing ----

test('unknown route → 404 JSON', async () => {
  for (const path of ['/nope', '/auth/v1/nope', '/admin/nothing-here', '/user/extra']) {
    const res = await api(server, 'GET', path);
    assert.equal(res.status, 404, `${path}: ${res.status} ${res.text}`);
    assert.ok(res.body && typeof res.body === 'object', `${path}: 404 body is not JSON: ${res.text}`);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  }
});

test('wrong method → 405 JSON', async () => {
  for (const [method, path] of [['GET', '/token'], ['DELETE', '/signup'], ['PATCH', '/user'], ['GET', '/logout']]) {
    const res = await api(server, method, path);
    assert.equal(res.status, 405, `${method} ${path}: ${res.status} ${res.text}`);
    assert.ok(res.body && typeof res.body === 'object', `405 body is not JSON: ${res.text}`);
  }
});

// ---- Error shapes ----

test('error body with X-Supabase-Api-Version: {code:"<error_code>", message} + headers', async () => {
  const res = await passwordRaw(server, victim.email, 'wrong-password-1');
  assert.equal(res.status, 400);
  assert.equal(res.body.code, 'invalid_credentials');
  assert.equal(typeof res.body.message, 'string');
  assert.ok(res.body.message.length > 0);
  assert.equal(res.body.msg, undefined);
  assert.equal(res.headers.get('x-supabase-api-version'), '2024-01-01');
  assert.equal(res.headers.get('x-sb-error-code'), 'invalid_credentials');
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
});

test('legacy error body without the header: {code:<status>, error_code, msg}', async () => {
  const res = await passwordRaw(server, victim.email, 'wrong-password-1', { version: false });
  assert.equal(res.status, 400);
  assert.equal(res.body.code, 400);
  assert.equal(res.body.error_code, 'invalid_credentials');
  assert.equal(typeof res.body.msg, 'string');
  assert.ok(res.body.msg.length > 0);

  const noAuth = await api(server, 'GET', '/user', { version: false });
  assert.equal(noAuth.status, 401);
  assert.deepEqual([noAuth.body.code, noAuth.body.error_code], [401, 'no_authorization']);
  assert.equal(typeof noAuth.body.msg, 'string');

  const weak = await api(server, 'POST', '/signup', {
    version: false,
    body: { email: uniqueEmail('legacy-weak'), password: '1' },
  });
  assert.equal(weak.status, 422);
  assert.equal(weak.body.code, 422);
  assert.equal(weak.body.error_code, 'weak_password');
  assert.deepEqual(weak.body.weak_password?.reasons, ['length']);
});

// ---- CORS ----

test('CORS preflight allows apikey, authorization and the version header', async () => {
  const res = await api(server, 'OPTIONS', '/token?grant_type=password', {
    apikey: null,
    version: false,
    headers: {
      Origin: 'http://localhost:3000',
      'Access-Control-Request-Method': 'POST',
      'Access-Control-Request-Headers': 'apikey,authorization,content-type,x-client-info,x-supabase-api-version',
    },
  });
  assert.ok(res.status === 200 || res.status === 204, `preflight status ${res.status} ${res.text}`);
  const allowOrigin = res.headers.get('access-control-allow-origin');
  assert.ok(allowOrigin === '*' || allowOrigin === 'http://localhost:3000', `allow-origin ${allowOrigin}`);
  const allowHeaders = (res.headers.get('access-control-allow-headers') ?? '').toLowerCase().split(/\s*,\s*/);
  for (const h of ['apikey', 'authorization', 'content-type', 'x-client-info', 'x-supabase-api-version']) {
    assert.ok(allowHeaders.includes(h), `allow-headers lacks ${h}: ${allowHeaders}`);
  }
  const methods = (res.headers.get('access-control-allow-methods') ?? '').toUpperCase();
  for (const m of ['GET', 'POST', 'PUT', 'DELETE']) assert.ok(methods.includes(m), `allow-methods lacks ${m}: ${methods}`);

  const prefixed = await api(server, 'OPTIONS', '/auth/v1/user', {
    apikey: null,
    version: false,
    headers: { Origin: 'http://localhost:3000', 'Access-Control-Request-Method': 'PUT',
      'Access-Control-Request-Headers': 'authorization' },
  });
  assert.ok(prefixed.status === 200 || prefixed.status === 204, `prefixed preflight ${prefixed.status}`);
});

test('CORS responses expose X-Supabase-Api-Version, X-Total-Count and Link', async () => {
  const res = await passwordRaw(server, victim.email, 'wrong-password-1', {
    headers: { Origin: 'http://localhost:3000' },
  });
  assert.equal(res.status, 400);
  assert.ok(res.headers.get('access-control-allow-origin'), 'allow-origin on the actual response');
  const exposed = (res.headers.get('access-control-expose-headers') ?? '').toLowerCase().split(/\s*,\s*/);
  for (const h of ['x-supabase-api-version', 'x-total-count', 'link']) {
    assert.ok(exposed.includes(h), `expose-headers lacks ${h}: ${exposed}`);
  }
  const ok = await api(server, 'GET', '/health', { headers: { Origin: 'http://localhost:3000' } });
  assert.ok(ok.headers.get('access-control-allow-origin'));
});
