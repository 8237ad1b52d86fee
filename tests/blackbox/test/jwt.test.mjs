// Access-token signing: ES256 with a published JWKS, and HS256 with JWT_SECRET (issue item 9).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRemoteJWKSet, jwtVerify, SignJWT, generateKeyPair, errors as joseErrors } from 'jose';
import {
  startServer,
  finish,
  test,
  makeClient,
  newUser,
  recordingFetch,
  api,
  getUserRaw,
  assertApiError,
  jwtHeader,
  jwtPayload,
  UUID_RE,
} from '../lib/server.mjs';

const SECRET = 'blackbox-test-secret-0123456789-abcdefghijklmnop';
const ISSUER_HS = 'https://issuer.blackbox.test/auth/v1';

let es; // ES256 (no JWT_SECRET)
let hs; // HS256 with a custom issuer
let aud; // ES256 with JWT_AUD=my-api

before(async () => {
  es = await startServer({ JWT_SECRET: null });
  hs = await startServer({ JWT_SECRET: SECRET, JWT_ISSUER: ISSUER_HS });
  aud = await startServer({ JWT_AUD: 'my-api' });
});

after(async () => {
  await finish(es, hs, aud);
});

test('ES256: /.well-known/jwks.json publishes one public P-256 key with kid and alg ES256', async () => {
  const res = await api(es, 'GET', '/.well-known/jwks.json');
  assert.equal(res.status, 200, res.text);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.ok(Array.isArray(res.body.keys));
  assert.ok(res.body.keys.length >= 1);
  const key = res.body.keys.find((k) => k.kid === jwtHeader(es.anonKey).kid);
  assert.ok(key, `no JWKS key matches the anon key's kid ${jwtHeader(es.anonKey).kid}`);
  assert.equal(key.kty, 'EC');
  assert.equal(key.crv, 'P-256');
  assert.equal(key.alg, 'ES256');
  assert.equal(typeof key.kid, 'string');
  assert.ok(key.kid.length > 0);
  assert.equal(typeof key.x, 'string');
  assert.equal(typeof key.y, 'string');
  for (const k of res.body.keys) {
    assert.equal(k.d, undefined, 'the private key must never be published');
    assert.notEqual(k.kty, 'oct', 'symmetric keys must never be published');
  }
  assert.match(res.headers.get('cache-control') ?? '', /max-age=\d+/);
});

test('ES256: jose verifies an access token against the remote JWKS; all claims present', async () => {
  const { session, user, email } = await newUser(es);
  const token = session.access_token;
  const header = jwtHeader(token);
  assert.equal(header.alg, 'ES256');
  assert.equal(typeof header.kid, 'string');

  const JWKS = createRemoteJWKSet(new URL(`${es.url}/.well-known/jwks.json`));
  const { payload, protectedHeader } = await jwtVerify(token, JWKS, {
    issuer: 'tessera',
    audience: 'authenticated',
    algorithms: ['ES256'],
  });
  assert.equal(protectedHeader.kid, header.kid);

  for (const c of ['sub', 'aud', 'exp', 'iat', 'iss', 'email', 'phone', 'app_metadata', 'user_metadata',
    'role', 'aal', 'amr', 'session_id', 'is_anonymous']) {
    assert.ok(c in payload, `claim ${c} missing: ${JSON.stringify(payload)}`);
  }
  assert.equal(payload.sub, user.id);
  assert.equal(payload.aud, 'authenticated');
  assert.equal(payload.iss, 'tessera');
  assert.equal(payload.exp - payload.iat, 3600);
  assert.equal(payload.email, email);
  assert.equal(payload.phone, '');
  assert.equal(payload.app_metadata.provider, 'email');
  assert.equal(typeof payload.user_metadata, 'object');
  assert.equal(payload.role, 'authenticated');
  assert.equal(payload.aal, 'aal1');
  assert.ok(Array.isArray(payload.amr) && payload.amr.length >= 1);
  assert.equal(payload.amr[0].method, 'password');
  assert.equal(typeof payload.amr[0].timestamp, 'number');
  assert.match(payload.session_id, UUID_RE);
  assert.equal(payload.is_anonymous, false);

  // The anon and service keys are signed by the same key.
  const anon = await jwtVerify(es.anonKey, JWKS, { issuer: 'tessera', algorithms: ['ES256'] });
  assert.equal(anon.payload.role, 'anon');
  const service = await jwtVerify(es.serviceKey, JWKS, { issuer: 'tessera', algorithms: ['ES256'] });
  assert.equal(service.payload.role, 'service_role');
});

test('ES256: auth-js getClaims verifies locally through the JWKS', async () => {
  const { session, user } = await newUser(es);
  const log = [];
  const client = makeClient(es, { fetch: recordingFetch(log) });
  const { data, error } = await client.getClaims(session.access_token);
  assert.equal(error, null);
  assert.equal(data.claims.sub, user.id);
  assert.equal(data.header.alg, 'ES256');
  const paths = log.map((r) => r.path);
  assert.ok(paths.includes('/.well-known/jwks.json'), `requests: ${paths}`);
  assert.ok(!paths.includes('/user'), `getClaims fell back to GET /user (kid not in JWKS?): ${paths}`);

  // A forged ES256 token with the server's kid fails local verification.
  const { privateKey } = await generateKeyPair('ES256');
  const forged = await new SignJWT({ ...jwtPayload(session.access_token) })
    .setProtectedHeader({ alg: 'ES256', kid: jwtHeader(session.access_token).kid, typ: 'JWT' })
    .sign(privateKey);
  const bad = await client.getClaims(forged);
  assert.ok(bad.error, 'forged token must not verify');
  assert.equal(bad.data, null);
  assertApiError(await getUserRaw(es, forged), 403, 'bad_jwt');
});

test('ES256: an HS256 token keyed with the public key is refused (no alg confusion)', async () => {
  const { session } = await newUser(es);
  const jwks = (await api(es, 'GET', '/.well-known/jwks.json')).body;
  const claims = jwtPayload(session.access_token);
  const kid = jwtHeader(session.access_token).kid;
  const pub = jwks.keys.find((k) => k.kid === kid);
  for (const secret of [JSON.stringify(pub), pub.x, `${pub.x}${pub.y}`]) {
    const t = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid, typ: 'JWT' })
      .sign(new TextEncoder().encode(secret));
    assertApiError(await getUserRaw(es, t), 403, 'bad_jwt');
  }
});

test('ES256: an unknown kid, a missing kid or a re-used kid with another key → 403 bad_jwt', async () => {
  const { session } = await newUser(es);
  const claims = jwtPayload(session.access_token);
  const { privateKey } = await generateKeyPair('ES256');
  const unknown = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'no-such-kid' }).sign(privateKey);
  assertApiError(await getUserRaw(es, unknown), 403, 'bad_jwt');
  const nokid = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256' }).sign(privateKey);
  assertApiError(await getUserRaw(es, nokid), 403, 'bad_jwt');
  // The server's own signature with the header swapped to another alg.
  const [h, p, sig] = session.access_token.split('.');
  const hdr = JSON.parse(Buffer.from(h, 'base64url').toString());
  for (const alg of ['ES384', 'RS256', 'HS256', 'none']) {
    const swapped = `${Buffer.from(JSON.stringify({ ...hdr, alg })).toString('base64url')}.${p}.${sig}`;
    assertApiError(await getUserRaw(es, swapped), 403, 'bad_jwt');
  }
  // Sanity: the untouched token works.
  assert.equal((await getUserRaw(es, session.access_token)).status, 200);
});

test('HS256: jwks is {"keys":[]} and tokens verify with the secret', async () => {
  const res = await api(hs, 'GET', '/.well-known/jwks.json');
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(res.body, { keys: [] });

  const { session, user } = await newUser(hs);
  const token = session.access_token;
  assert.equal(jwtHeader(token).alg, 'HS256');
  const { payload } = await jwtVerify(token, new TextEncoder().encode(SECRET), {
    issuer: ISSUER_HS,
    audience: 'authenticated',
    algorithms: ['HS256'],
  });
  assert.equal(payload.sub, user.id);
  assert.match(payload.session_id, UUID_RE);

  await assert.rejects(
    jwtVerify(token, new TextEncoder().encode(`${SECRET}-other`), { algorithms: ['HS256'] }),
    joseErrors.JWSSignatureVerificationFailed,
  );

  const anon = await jwtVerify(hs.anonKey, new TextEncoder().encode(SECRET), { algorithms: ['HS256'] });
  assert.equal(anon.payload.role, 'anon');
  assert.equal(anon.payload.iss, ISSUER_HS);
});

test('HS256: auth-js getClaims falls back to GET /user and works', async () => {
  const { session, user } = await newUser(hs);
  const log = [];
  const client = makeClient(hs, { fetch: recordingFetch(log) });
  const { data, error } = await client.getClaims(session.access_token);
  assert.equal(error, null);
  assert.equal(data.claims.sub, user.id);
  assert.ok(log.some((r) => r.path === '/user'), 'HS256 getClaims asks the server');
});

test('refreshed tokens keep the session id and carry fresh claims', async () => {
  const { session, client } = await newUser(es);
  const upd = await client.updateUser({ data: { color: 'blue' } });
  assert.equal(upd.error, null);
  const { data, error } = await client.refreshSession();
  assert.equal(error, null);
  const c = jwtPayload(data.session.access_token);
  assert.equal(c.session_id, jwtPayload(session.access_token).session_id);
  assert.equal(c.user_metadata.color, 'blue');
  const JWKS = createRemoteJWKSet(new URL(`${es.url}/.well-known/jwks.json`));
  await jwtVerify(data.session.access_token, JWKS, { issuer: 'tessera', audience: 'authenticated' });
});

test('JWT_AUD sets the audience of issued tokens and is enforced', async () => {
  const { session, user } = await newUser(aud);
  const JWKS = createRemoteJWKSet(new URL(`${aud.url}/.well-known/jwks.json`));
  const { payload } = await jwtVerify(session.access_token, JWKS, { issuer: 'tessera', audience: 'my-api' });
  assert.equal(payload.sub, user.id);
  assert.equal(user.aud, 'my-api');
  assert.equal((await getUserRaw(aud, session.access_token)).status, 200);
  // A token for the default audience, from another server with another key, is refused.
  const other = await newUser(es);
  assertApiError(await getUserRaw(aud, other.session.access_token), 403, 'bad_jwt');
});
