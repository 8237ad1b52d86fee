// Raw HTTP error paths, error body shapes, token forgery, CORS (issue item 10).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { SignJWT } from 'jose';
import { createHmac } from 'node:crypto';
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

/** rawHttp, but a connection closed without any response becomes {status: 'no response (<code>)'}. */
async function rawOrClosed(...args) {
  try {
    return await rawHttp(...args);
  } catch (e) {
    return { status: `no response (${e.code ?? e.message})`, text: '' };
  }
}

test('body over 1 MiB with Content-Length → 413 JSON', async () => {
  const big = `{"email":"big@example.com","password":"${'x'.repeat(1024 * 1024 + 100)}"}`;
  const res = await rawOrClosed(server, 'POST', '/signup', {
    headers: {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(big),
      'X-Supabase-Api-Version': '2024-01-01',
    },
    body: big,
  });
  assert.equal(res.status, 413, res.text);
  // The version header was sent, so the body is the 2024-01-01 shape like every other error.
  assert.equal(typeof res.body?.code, 'string', `413 body shape: ${res.text}`);
  assert.equal(typeof res.body?.message, 'string', `413 body shape: ${res.text}`);
  assert.equal((await api(server, 'GET', '/health')).status, 200);
});

test('fetch() sending a 4 MiB body in full still receives the 413 (no reset before the reply)', async () => {
  // fetch writes the whole body before reading; if the server closes right after answering,
  // the unread bytes make the kernel reset the connection and the 413 is lost (RFC 9112 §9.6).
  const big = 'x'.repeat(4 * 1024 * 1024);
  const statuses = [];
  for (let i = 0; i < 5; i++) {
    try {
      const res = await api(server, 'POST', '/token?grant_type=password', {
        rawBody: big,
        headers: { 'Content-Type': 'application/json' },
      });
      statuses.push(res.status);
    } catch (e) {
      statuses.push(`no response (${e.cause?.code ?? e.message})`);
    }
  }
  assert.deepEqual(statuses, [413, 413, 413, 413, 413]);
  assert.equal((await api(server, 'GET', '/health')).status, 200);
});

test('chunked body over 1 MiB → 413 (a response, not a dropped connection)', async () => {
  const chunk = 'x'.repeat(64 * 1024);
  const chunks = ['{"email":"big@example.com","password":"'];
  for (let i = 0; i < 17; i++) chunks.push(chunk);
  chunks.push('"}');
  const res = await rawOrClosed(server, 'POST', '/signup', {
    headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
    chunks,
  });
  assert.equal(res.status, 413, res.text);
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

test('non-JSON content types are a 400 JSON error', async () => {
  for (const [ct, rawBody] of [
    ['application/xml', '<signup><email>x@example.com</email></signup>'],
    ['text/html', '<html></html>'],
    ['multipart/form-data; boundary=zzz', '--zzz\r\nContent-Disposition: form-data; name="email"\r\n\r\nx@example.com\r\n--zzz--\r\n'],
  ]) {
    const res = await api(server, 'POST', '/signup', { rawBody, headers: { 'Content-Type': ct } });
    assertApiError(res, 400, 'bad_json');
  }
  // Tessera also takes OAuth-style form bodies (application/x-www-form-urlencoded); a malformed
  // one is still a clean 400.
  const badForm = await api(server, 'POST', '/token?grant_type=password', {
    rawBody: 'email=%zz&password=%',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(badForm.status, 400, badForm.text);
  assert.equal(typeof badForm.body?.code, 'string', badForm.text);
  assert.equal(badForm.body.access_token, undefined);
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

/** HS256 by hand, for headers jose refuses to produce. */
function signRaw(header, claims, secret = SECRET) {
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

test('not-yet-valid (nbf in the future) token → 403 bad_jwt', async () => {
  const claims = jwtPayload(victim.session.access_token);
  const now = Math.floor(Date.now() / 1000);
  const t = await sign({ ...claims, nbf: now + 3600 });
  assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
});

test('a token with an unknown critical header → 403 bad_jwt', async () => {
  const claims = jwtPayload(victim.session.access_token);
  // Control: the hand signer produces tokens the server accepts.
  assert.equal((await getUserRaw(server, signRaw({ alg: 'HS256', typ: 'JWT' }, claims))).status, 200);
  const t = signRaw({ alg: 'HS256', typ: 'JWT', crit: ['x-unknown'], 'x-unknown': true }, claims);
  assertApiError(await getUserRaw(server, t), 403, 'bad_jwt');
});

test('a token without exp → 403 bad_jwt', async () => {
  const { exp, ...claims } = jwtPayload(victim.session.access_token);
  void exp;
  assertApiError(await getUserRaw(server, await sign(claims)), 403, 'bad_jwt');
});

test('a refresh token is not a bearer token', async () => {
  assertApiError(await getUserRaw(server, victim.session.refresh_token), 403, 'bad_jwt');
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
    assertApiError(res, 404);
    assert.equal(typeof res.body.code, 'string', res.text);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  }
});

test('a percent-encoded NUL in the path does not truncate the route', async () => {
  for (const path of ['/health%00xyz', '/admin/users/%00', '/settings%00/../nope']) {
    const res = await api(server, 'GET', path, { token: server.serviceKey });
    assert.ok([400, 404].includes(res.status), `${path}: ${res.status} ${res.text.slice(0, 120)}`);
  }
});

test('wrong method → 405 JSON', async () => {
  for (const [method, path, allowed] of [
    ['GET', '/token', 'POST'],
    ['DELETE', '/signup', 'POST'],
    ['PATCH', '/user', 'PUT'],
    ['GET', '/logout', 'POST'],
    ['POST', '/health', 'GET'],
    ['PUT', '/admin/users', 'GET'],
  ]) {
    const res = await api(server, method, path);
    assert.equal(res.status, 405, `${method} ${path}: ${res.status} ${res.text}`);
    assertApiError(res, 405);
    assert.equal(typeof res.body.code, 'string', res.text);
    // RFC 9110 §15.5.6: a 405 MUST carry an Allow header listing the supported methods.
    const allow = (res.headers.get('allow') ?? '').toUpperCase();
    assert.ok(allow.split(/\s*,\s*/).includes(allowed), `${method} ${path}: Allow header "${allow}" lacks ${allowed}`);
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

test('API version header: later dates get the 2024-01-01 shape, earlier ones the legacy shape', async () => {
  const later = await passwordRaw(server, victim.email, 'wrong-password-1', {
    headers: { 'X-Supabase-Api-Version': '2025-06-01' },
  });
  assert.equal(later.status, 400);
  assert.equal(later.body.code, 'invalid_credentials', later.text);
  assert.equal(later.headers.get('x-supabase-api-version'), '2024-01-01');
  const earlier = await passwordRaw(server, victim.email, 'wrong-password-1', {
    headers: { 'X-Supabase-Api-Version': '2023-05-01' },
  });
  assert.equal(earlier.status, 400);
  assert.equal(earlier.body.code, 400, earlier.text);
  assert.equal(earlier.body.error_code, 'invalid_credentials');
  const garbage = await passwordRaw(server, victim.email, 'wrong-password-1', {
    headers: { 'X-Supabase-Api-Version': 'not-a-date' },
  });
  assert.equal(garbage.status, 400);
  assert.equal(garbage.body.error_code ?? garbage.body.code, 'invalid_credentials', garbage.text);
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
