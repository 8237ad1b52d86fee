// External identities (issue 5) against a real OpenID provider: npm `oidc-provider` on loopback
// (lib/idp.mjs), with its own RS256 and ES256 keys, issuing ID tokens and JWT access tokens
// through its real authorization-code flow. Tessera trusts it through an AccessProvider
// (bearer tokens on /v1, token exchange at /v1/oauth/token) and through
// EXTERNAL_OIDCTEST_* (GoTrue's id_token grant, driven by auth-js signInWithIdToken).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startServer, finish, test, makeClient, trackedFetch, jwtPayload, jwtHeader, UUID_RE } from '../lib/server.mjs';
import { v1, setupKeys, createCollection, uniqueName, expect, assertUnauthorized, TST_RE, timeMs } from '../lib/v1.mjs';
import { startIdp, sha256hex } from '../lib/idp.mjs';

const AUD = 'https://tessera.blackbox.test';
const URN = {
  exchange: 'urn:ietf:params:oauth:grant-type:token-exchange',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  access: 'urn:ietf:params:oauth:token-type:access_token',
  tst: 'urn:ietf:params:oauth:token-type:tst',
};

let idp;
let server;
let admin;
let coll;

const ACCOUNTS = {
  alice: { email: 'alice@idp.example.com', email_verified: true, name: 'Alice', groups: ['ops'] },
  bob: { email: 'bob@idp.example.com', email_verified: true, name: 'Bob', groups: [] },
  carol: { email: 'carol@idp.example.com', email_verified: true, name: 'Carol' },
  dave: { email: 'dave@idp.example.com', email_verified: false, name: 'Dave' },
  erin: { email: 'erin@idp.example.com', email_verified: true, name: 'Erin' },
  taken: { email: 'taken@example.com', email_verified: true, name: 'Someone else' },
  frank: { email: 'frank@idp.example.com', email_verified: true, name: 'Frank' },
};

before(async () => {
  idp = await startIdp({ audience: AUD, accounts: ACCOUNTS });
  server = await startServer({
    API_EXTERNAL_URL: AUD,
    EXTERNAL_OIDCTEST_ENABLED: 'true',
    EXTERNAL_OIDCTEST_ISSUER: idp.issuer,
    EXTERNAL_OIDCTEST_CLIENT_ID: `${idp.clients.rs.client_id},${idp.clients.es.client_id}`,
    EXTERNAL_OIDCTEST_JWKS_URI: idp.jwksUri,
    // The same provider found through OIDC discovery (no _JWKS_URI).
    EXTERNAL_DISCO_ENABLED: 'true',
    EXTERNAL_DISCO_ISSUER: idp.issuer,
    EXTERNAL_DISCO_CLIENT_ID: idp.clients.rs.client_id,
  });
  const keys = await setupKeys(server);
  admin = keys.admin;
  coll = await createCollection(admin, uniqueName('people'));
  const res = await admin.post('/v1/access-providers', {
    name: 'oidc-provider',
    issuer: idp.issuer,
    jwks_uri: idp.jwksUri,
    algorithms: ['RS256', 'ES256'],
    provision: { collection: coll, data: { email: 'claims.email', name: 'claims.name' } },
  });
  const p = expect(res, 201);
  assert.equal(p.audience, AUD, 'audience defaults to API_EXTERNAL_URL');
});

after(async () => {
  await idp?.stop();
  await finish(server);
});

const me = (secret) => v1(server, 'GET', '/v1/me', { as: secret });
const nowS = () => Math.floor(Date.now() / 1000);

async function exchange(body, { form = false } = {}) {
  const init = { method: 'POST', headers: {} };
  if (form) {
    init.headers['Content-Type'] = 'application/x-www-form-urlencoded';
    init.body = new URLSearchParams(body).toString();
  } else {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await trackedFetch(`${server.url}/v1/oauth/token`, init);
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, body: parsed, req: `POST /v1/oauth/token ${init.body.slice(0, 200)}` };
}

test('oidc-provider JWT access tokens (RS256 and ES256) are bearer credentials on /v1/me; the identity is provisioned once', async () => {
  const t1 = await idp.authorize({ account: 'alice', client: 'rs' });
  assert.equal(jwtHeader(t1.access_token).alg, 'RS256');
  assert.equal(jwtPayload(t1.access_token).aud, AUD);

  const m1 = expect(await me(t1.access_token), 200);
  assert.equal(m1.credential.kind, 'jwt', JSON.stringify(m1));
  assert.equal(m1.identity?.collection, coll, JSON.stringify(m1));
  assert.equal(typeof m1.identity.id, 'string');
  assert.equal(m1.document?.id, m1.identity.id);
  assert.equal(m1.document.data.email, ACCOUNTS.alice.email, 'provisioned from claims.email');
  assert.equal(m1.document.data.name, 'Alice', 'provisioned from claims.name');

  // Same token again, and a new token of the same account signed with the ES256 key: same identity.
  const m2 = expect(await me(t1.access_token), 200);
  assert.deepEqual(m2.identity, m1.identity);
  const t2 = await idp.authorize({ account: 'alice', client: 'es' });
  assert.equal(jwtHeader(t2.access_token).alg, 'ES256');
  const m3 = expect(await me(t2.access_token), 200);
  assert.deepEqual(m3.identity, m1.identity, 'a second token of the same (iss, sub) reaches the same document');

  // Exactly one document was provisioned for alice.
  const list = expect(await admin.get(`/v1/collections/${coll}/documents?size=1000`), 200);
  const alices = list.data.filter((d) => d.data.email === ACCOUNTS.alice.email);
  assert.equal(alices.length, 1, JSON.stringify(list.data));

  // Another account: another identity.
  const tb = await idp.authorize({ account: 'bob', client: 'es' });
  const mb = expect(await me(tb.access_token), 200);
  assert.notDeepEqual(mb.identity, m1.identity);
  assert.equal(mb.document.data.email, ACCOUNTS.bob.email);
});

test('oidc-provider tokens Tessera must refuse: an ID token (aud is the client, not this instance), a tampered access token', async () => {
  const t = await idp.authorize({ account: 'alice', nonce: 'x' });
  assertUnauthorized(await me(t.id_token));
  const [h, p, s] = t.access_token.split('.');
  const claims = JSON.parse(Buffer.from(p, 'base64url'));
  claims.sub = 'bob';
  assertUnauthorized(await me(`${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`));
  // and the genuine one still works
  expect(await me(t.access_token), 200);
});

for (const [label, client] of [
  ['RS256', 'rs'],
  ['ES256', 'es'],
]) {
  test(`token exchange of an oidc-provider ${label} access token: both token types; the issued token works on /v1/me and never outlives the subject`, async () => {
    idp.state.accessTokenTTL = 90; // a short-lived subject token: the issued ones must not outlive it
    let t;
    try {
      t = await idp.authorize({ account: 'erin', client });
    } finally {
      idp.state.accessTokenTTL = 600;
    }
    const subjectExp = jwtPayload(t.access_token).exp;
    assert.ok(subjectExp - nowS() <= 91, 'the subject token is short-lived');
    const who = expect(await me(t.access_token), 200).identity;
    assert.ok(who, 'erin is provisioned');

    // Default requested type: a Tessera JWT (access_token), JSON body.
    const before1 = nowS();
    const r1 = await exchange({ grant_type: URN.exchange, subject_token: t.access_token, subject_token_type: URN.jwt });
    const b1 = expect(r1, 200);
    assert.equal(b1.issued_token_type, URN.access, r1.text);
    assert.match(b1.token_type, /^bearer$/i, r1.text);
    assert.equal(typeof b1.expires_in, 'number', r1.text);
    assert.ok(b1.expires_in > 0, r1.text);
    assert.ok(b1.expires_in <= subjectExp - before1 + 1, `expires_in ${b1.expires_in} outlives the subject token (exp in ${subjectExp - before1} s)`);
    assert.match(r1.headers.get('cache-control') ?? '', /no-store/, 'Cache-Control: no-store');
    const claims = jwtPayload(b1.access_token);
    assert.ok(claims.exp <= subjectExp, `issued exp ${claims.exp} > subject exp ${subjectExp}`);
    assert.equal(claims.tessera_identity, `${who.collection}/${who.id}`);
    const m1 = expect(await me(b1.access_token), 200);
    assert.deepEqual(m1.identity, who, 'the issued JWT acts as the same identity');

    // requested_token_type = access_token explicitly, form body.
    const r2 = await exchange(
      { grant_type: URN.exchange, subject_token: t.access_token, subject_token_type: URN.jwt, requested_token_type: URN.access, audience: 'reports', scope: 'read' },
      { form: true },
    );
    const b2 = expect(r2, 200);
    assert.equal(b2.issued_token_type, URN.access);
    assert.deepEqual(expect(await me(b2.access_token), 200).identity, who);

    // An opaque tst_ token, origin exchange, expiring with the subject token at the latest.
    const before3 = nowS();
    const r3 = await exchange({ grant_type: URN.exchange, subject_token: t.access_token, subject_token_type: URN.jwt, requested_token_type: URN.tst });
    const b3 = expect(r3, 200);
    assert.equal(b3.issued_token_type, URN.tst);
    assert.match(b3.access_token, TST_RE);
    assert.ok(b3.expires_in > 0 && b3.expires_in <= subjectExp - before3 + 1, `tst expires_in ${b3.expires_in} vs subject ${subjectExp - before3}`);
    const m3 = expect(await me(b3.access_token), 200);
    assert.deepEqual(m3.identity, who);
    assert.equal(m3.credential.kind, 'token');
    assert.ok(timeMs(m3.credential.expires_at, 'expires_at') <= subjectExp * 1000 + 1000, `tst expires_at ${m3.credential.expires_at} after the subject's exp`);
    // The ledger: origin exchange, meta names the provider and subject, never the subject token.
    const tok = expect(await admin.get(`/v1/tokens/${m3.credential.id}`), 200);
    assert.equal(tok.origin, 'exchange', JSON.stringify(tok));
    assert.ok(!JSON.stringify(tok).includes(t.access_token.split('.')[2]), 'the subject token is never recorded');

    // act names the subject token's issuer and subject (RFC 8693 §4.1: iss is the issuer URL).
    assert.deepEqual(claims.act, { iss: idp.issuer, sub: 'erin' }, 'act of the issued JWT');
  });
}

test('id_token grant: auth-js signInWithIdToken with an oidc-provider ID token and the nonce rule; same user on the second sign-in', async () => {
  const client = makeClient(server);
  const raw = randomBytes(16).toString('hex');
  const t = await idp.authorize({ account: 'carol', nonce: sha256hex(raw), client: 'rs' });
  assert.equal(jwtPayload(t.id_token).nonce, sha256hex(raw));
  const { data, error } = await client.signInWithIdToken({ provider: 'oidctest', token: t.id_token, nonce: raw });
  assert.equal(error, null, `signInWithIdToken: ${error?.status} ${error?.code} ${error?.message}`);
  assert.ok(data.session?.access_token, 'a session');
  assert.ok(data.session.refresh_token);
  const user = data.user;
  assert.match(user.id, UUID_RE);
  assert.equal(user.email, ACCOUNTS.carol.email);
  assert.ok(user.email_confirmed_at, 'email_verified → confirmed');
  assert.equal(user.app_metadata.provider, 'oidctest', JSON.stringify(user.app_metadata));
  const ids = (user.identities ?? []).filter((i) => i.provider === 'oidctest');
  assert.equal(ids.length, 1, `identities: ${JSON.stringify(user.identities)}`);

  const got = await client.getUser();
  assert.equal(got.error, null, `getUser: ${got.error?.message}`);
  assert.equal(got.data.user.id, user.id);
  assert.ok(got.data.user.identities.some((i) => i.provider === 'oidctest'));

  // Second sign-in, a new ID token signed with the ES256 key (the other client id): same user.
  const raw2 = randomBytes(16).toString('hex');
  const t2 = await idp.authorize({ account: 'carol', nonce: sha256hex(raw2), client: 'es' });
  assert.equal(jwtHeader(t2.id_token).alg, 'ES256');
  const c2 = makeClient(server);
  const s2 = await c2.signInWithIdToken({ provider: 'oidctest', token: t2.id_token, nonce: raw2 });
  assert.equal(s2.error, null, `second signInWithIdToken: ${s2.error?.message}`);
  assert.equal(s2.data.user.id, user.id, 'found by (issuer, sub)');
  assert.equal(s2.data.user.identities.filter((i) => i.provider === 'oidctest').length, 1, 'still one identity');
});

test('id_token grant: nonce mismatch, missing nonce, wrong audience, unknown provider → 400; a token without nonce needs none', async () => {
  const raw = randomBytes(16).toString('hex');
  const t = await idp.authorize({ account: 'frank', nonce: sha256hex(raw) });
  const c = makeClient(server);
  const cases = [
    ['wrong nonce', { provider: 'oidctest', token: t.id_token, nonce: 'not-the-nonce' }],
    ['hashed nonce given raw', { provider: 'oidctest', token: t.id_token, nonce: sha256hex(raw) }],
    ['no nonce for a token that has one', { provider: 'oidctest', token: t.id_token }],
    ['the access token (aud is not a client id)', { provider: 'oidctest', token: t.access_token, nonce: raw }],
    ['unknown provider', { provider: 'nosuchidp', token: t.id_token, nonce: raw }],
  ];
  for (const [what, creds] of cases) {
    const { data, error } = await c.signInWithIdToken(creds);
    assert.ok(error, `${what}: expected an error, got ${JSON.stringify(data?.user?.id)}`);
    assert.equal(error.status, 400, `${what}: ${error.status} ${error.message}`);
    assert.equal(data.session, null);
  }
  // Raw request: the OAuth error shape.
  const res = await trackedFetch(`${server.url}/token?grant_type=id_token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', apikey: server.anonKey },
    body: JSON.stringify({ provider: 'oidctest', id_token: t.id_token, nonce: 'wrong' }),
  });
  const body = await res.json();
  assert.equal(res.status, 400);
  assert.equal(body.error, 'invalid_request', JSON.stringify(body));
  assert.equal(typeof body.error_description, 'string');

  // The right nonce still works after those failures.
  const ok = await c.signInWithIdToken({ provider: 'oidctest', token: t.id_token, nonce: raw });
  assert.equal(ok.error, null, ok.error?.message);

  // A token without a nonce claim, and no nonce given: accepted.
  const t2 = await idp.authorize({ account: 'dave' });
  assert.equal(jwtPayload(t2.id_token).nonce, undefined);
  const d = await makeClient(server).signInWithIdToken({ provider: 'oidctest', token: t2.id_token });
  assert.equal(d.error, null, d.error?.message);
  assert.equal(d.data.user.email, ACCOUNTS.dave.email);
  assert.ok(!d.data.user.email_confirmed_at, 'email_verified false → not confirmed');
});

test('id_token grant: an e-mail another user already has is refused (422 email_exists), never linked by e-mail', async () => {
  const c = makeClient(server);
  const su = await c.signUp({ email: ACCOUNTS.taken.email, password: 'correct horse battery' });
  assert.equal(su.error, null, su.error?.message);
  const t = await idp.authorize({ account: 'taken' });
  const { data, error } = await makeClient(server).signInWithIdToken({ provider: 'oidctest', token: t.id_token });
  assert.ok(error, `expected email_exists, got user ${data?.user?.id}`);
  assert.equal(error.status, 422, error.message);
  assert.equal(error.code, 'email_exists');
});

test('id_token grant through OIDC discovery (no _JWKS_URI): the provider is found from its issuer', async () => {
  const t = await idp.authorize({ account: 'erin', client: 'rs' });
  const { data, error } = await makeClient(server).signInWithIdToken({ provider: 'disco', token: t.id_token });
  assert.equal(error, null, `disco: ${error?.status} ${error?.message}`);
  assert.equal(data.user.email, ACCOUNTS.erin.email);
  assert.ok(data.user.identities.some((i) => i.provider === 'disco'), JSON.stringify(data.user.identities));
});
