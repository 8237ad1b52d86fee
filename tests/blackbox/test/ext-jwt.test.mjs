// External identities (issue 5) against an independent minter (npm `jose`) serving its own JWKS
// over loopback HTTP (lib/idp.mjs): the negative matrix of outside JWTs as bearer credentials on
// /v1 (every bad one the uniform 401, never a 5xx), every supported algorithm, the JWKS cache
// (refetch rate limit, shared fetches, ETag revalidation, serving the last good set while the
// provider is down), AccessProvider CRUD and validation, role predicates, provisioning, and the
// RFC 6749 errors of the token exchange.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SignJWT, exportSPKI, base64url } from 'jose';
import { startServer, finish, test, sleep, trackedFetch, jwtPayload } from '../lib/server.mjs';
import {
  v1,
  caller,
  setupKeys,
  createCollection,
  createDoc,
  uniqueName,
  expect,
  assertV1Error,
  assertUnauthorized,
  assertForbidden,
  eventually,
  TST_RE,
} from '../lib/v1.mjs';
import { makeKey, startJwksServer, sign, now } from '../lib/idp.mjs';

const AUD = 'https://tessera.blackbox.test';
const ISS = 'https://minter.blackbox.test/';
const URN = {
  exchange: 'urn:ietf:params:oauth:grant-type:token-exchange',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  access: 'urn:ietf:params:oauth:token-type:access_token',
  tst: 'urn:ietf:params:oauth:token-type:tst',
};
const ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'];

let server;
let keys;
let admin;
let people; // the main minter's provisioning collection
const K = {}; // alg → key of the main minter
let jwks; // the main minter's JWKS server
const stopped = []; // JWKS servers to stop at the end
// ETag / max-age: primed in before() so that its minute passes while the other tests run.
let etag;

before(async () => {
  server = await startServer({ API_EXTERNAL_URL: AUD });
  keys = await setupKeys(server);
  admin = keys.admin;
  people = await createCollection(admin, uniqueName('people'));
  for (const alg of ALGS) K[alg] = await makeKey(alg);
  jwks = await startJwksServer(ALGS.map((a) => K[a].jwk));
  stopped.push(jwks);
  expect(
    await admin.post('/v1/access-providers', {
      name: 'minter',
      issuer: ISS,
      jwks_uri: jwks.url,
      provision: { collection: people, data: { email: 'claims.email', dept: 'claims.org.dept' } },
    }),
    201,
  );

  // max-age=1 is below the 1 min bound: the set must not be refetched before a minute.
  const key = await makeKey('ES256');
  const srv = await startJwksServer([key.jwk], { maxAge: 1 });
  stopped.push(srv);
  const iss = 'https://etag.blackbox.test';
  expect(
    await admin.post('/v1/access-providers', {
      name: 'etag',
      issuer: iss,
      jwks_uri: srv.url,
      roles: [{ role: 'server-readonly', predicate: 'true' }],
    }),
    201,
  );
  const tok = await sign(key, claims({ iss, sub: 'prime' }));
  expect(await me(tok), 200);
  etag = { key, srv, iss, primedAt: Date.now() };
});

after(async () => {
  for (const s of stopped) await s.stop();
  await finish(server);
});

const me = (secret) => v1(server, 'GET', '/v1/me', { as: secret });
const sub = (p = 's') => `${p}-${randomBytes(6).toString('hex')}`;
function claims(extra = {}) {
  const t = now();
  return { iss: ISS, aud: AUD, sub: sub(), iat: t, exp: t + 300, ...extra };
}
function b64json(o) {
  return base64url.encode(JSON.stringify(o));
}

/** A fresh JWKS server + AccessProvider. Returns {srv, iss, name, keys}. */
async function provider(algs, body = {}, srvOpts = {}) {
  const ks = [];
  for (const a of algs) ks.push(await makeKey(a));
  const srv = await startJwksServer(ks.map((k) => k.jwk), srvOpts);
  stopped.push(srv);
  const name = uniqueName('p');
  const iss = `https://${name}.blackbox.test`;
  expect(await admin.post('/v1/access-providers', { name, issuer: iss, jwks_uri: srv.url, ...body }), 201);
  return { srv, iss, name, keys: ks };
}

// ---------------------------------------------------------------------------------------------
// Algorithms and the negative matrix

test('every supported algorithm is accepted: RS256 RS384 RS512 PS256 ES256 ES384 EdDSA', async () => {
  for (const alg of ALGS) {
    const c = claims({ email: `${alg}@example.com` });
    const res = await me(await sign(K[alg], c));
    const m = expect(res, 200);
    assert.equal(m.credential.kind, 'jwt', `${alg}: ${res.text}`);
    assert.equal(m.identity?.collection, people, `${alg}: ${res.text}`);
    assert.equal(m.document.data.email, `${alg}@example.com`, alg);
  }
});

test('negative matrix: every bad token is the uniform 401 with WWW-Authenticate, never a 5xx', async () => {
  const rs = K.RS256;
  const t = now();
  const good = claims();
  const [gh, gp, gs] = (await sign(rs, good)).split('.');
  const spkiPem = await exportSPKI(rs.publicKey);
  const tampered = { ...good, sub: 'someone-else' };
  const cases = {
    expired: await sign(rs, claims({ iat: t - 600, exp: t - 120 })),
    'nbf in the future beyond the skew': await sign(rs, claims({ nbf: t + 300 })),
    'no exp': await sign(rs, (({ exp, ...c }) => c)(claims())),
    'wrong issuer': await sign(rs, claims({ iss: 'https://not-trusted.example/' })),
    'issuer differs by a trailing slash': await sign(rs, claims({ iss: ISS.replace(/\/$/, '') })),
    'wrong audience': await sign(rs, claims({ aud: 'https://elsewhere.example' })),
    'audience array without ours': await sign(rs, claims({ aud: ['https://a.example', 'https://b.example'] })),
    'no sub': await sign(rs, (({ sub: _s, ...c }) => c)(claims())),
    'empty sub': await sign(rs, claims({ sub: '' })),
    'numeric sub': await sign(rs, claims({ sub: 42 })),
    'alg none': `${b64json({ alg: 'none', typ: 'JWT', kid: rs.kid })}.${b64json(claims())}.`,
    'alg none without kid': `${b64json({ alg: 'none', typ: 'JWT' })}.${b64json(claims())}.`,
    'HS256 with the RSA public key (PEM) as MAC key': await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: rs.kid })
      .sign(new TextEncoder().encode(spkiPem)),
    'HS256 with the RSA public JWK as MAC key': await new SignJWT(claims())
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: rs.kid })
      .sign(new TextEncoder().encode(JSON.stringify(rs.jwk))),
    'HS512 without kid': await new SignJWT(claims()).setProtectedHeader({ alg: 'HS512' }).sign(new TextEncoder().encode('x'.repeat(64))),
    'tampered payload': `${gh}.${b64json(tampered)}.${gs}`,
    'signature of another token': `${gh}.${gp}.${(await sign(rs, claims())).split('.')[2]}`,
    'signature stripped': `${gh}.${gp}.`,
    'signed by another key with the same kid': await sign(await makeKey('RS256', rs.kid), claims()),
    'key type mismatch: ES256 token naming the RSA key': await sign(K.ES256, claims(), { header: { kid: rs.kid } }),
    'key type mismatch: RS256 token naming the EC key': await sign(rs, claims(), { header: { kid: K.ES256.kid } }),
    'key type mismatch: EdDSA token naming the EC key': await sign(K.EdDSA, claims(), { header: { kid: K.ES256.kid } }),
    'ES384 token naming the ES256 key (curve mismatch)': await sign(K.ES384, claims(), { header: { kid: K.ES256.kid } }),
    'no kid in a set of several keys': await sign(rs, claims(), { header: { kid: null } }),
    'garbage': 'a.b.c',
    'two segments': `${gh}.${gp}`,
    'header not JSON': `${base64url.encode('nope')}.${gp}.${gs}`,
  };
  for (const [what, tok] of Object.entries(cases)) {
    const res = await me(tok);
    assert.ok(res.status < 500, `${what}: 5xx ${res.text}`);
    assert.equal(res.status, 401, `${what}: expected 401, got ${res.status} ${res.text}`);
    assertUnauthorized(res);
  }
  // Within the skew (30 s by default): accepted.
  expect(await me(await sign(rs, claims({ iat: t - 600, exp: t - 10 }))), 200);
  expect(await me(await sign(rs, claims({ nbf: t + 10 }))), 200);
  // An aud array containing ours: accepted.
  expect(await me(await sign(rs, claims({ aud: ['https://other.example', AUD] }))), 200);
});

test('unknown kid → 401, then rotated into the JWKS → accepted after the refetch', async () => {
  const fresh = await makeKey('ES256');
  const tok = await sign(fresh, claims());
  const f0 = jwks.fetches;
  assertUnauthorized(await me(tok));
  // Rotate it in; the next refetch is allowed 500 ms after the last one.
  jwks.addKey(fresh.jwk);
  let last;
  const ok = await eventually(async () => {
    last = await me(await sign(fresh, claims()));
    return last.status === 200;
  }, 15000, 250);
  assert.ok(ok, `the rotated-in key was never accepted: ${last.status} ${last.text}`);
  assert.ok(jwks.fetches > f0, 'the minter served a refetch');
  assert.ok(jwks.fetches - f0 <= 10, `too many fetches for one rotation: ${jwks.fetches - f0}`);
});

test('a set with one key and a token without kid uses that key', async () => {
  const p = await provider(['RS256'], { roles: [{ role: 'server-readonly', predicate: 'true' }] });
  const [k] = p.keys;
  const noKid = await sign(k, claims({ iss: p.iss }), { header: { kid: null } });
  const m = expect(await me(noKid), 200);
  assert.equal(m.credential.kind, 'jwt');
  assert.equal(m.identity, null, 'no provision, no link: role only');
  // A wrong signature is still refused without a kid.
  assertUnauthorized(await me(await sign(await makeKey('RS256'), claims({ iss: p.iss }), { header: { kid: null } })));
});

test('a provider\'s algorithms restriction is honoured', async () => {
  const p = await provider(['RS256', 'ES256'], { algorithms: ['ES256'], roles: [{ role: 'server-readonly', predicate: 'true' }] });
  const [rs, es] = p.keys;
  expect(await me(await sign(es, claims({ iss: p.iss }))), 200);
  assertUnauthorized(await me(await sign(rs, claims({ iss: p.iss }))));
  // The restriction changes with PUT.
  const got = expect(await admin.get(`/v1/access-providers/${p.name}`), 200);
  const { name: _n, created_at: _c, updated_at: _u, ...rest } = got;
  expect(await admin.put(`/v1/access-providers/${p.name}`, { ...rest, algorithms: ['RS256'] }), 200);
  expect(await me(await sign(rs, claims({ iss: p.iss }))), 200);
  assertUnauthorized(await me(await sign(es, claims({ iss: p.iss }))));
});

// ---------------------------------------------------------------------------------------------
// JWKS cache behaviour

test('100 concurrent requests with an unknown kid: at most ~1–2 fetches served, all 401, then the rotated key works', async (t) => {
  const p = await provider(['RS256'], { roles: [{ role: 'server-readonly', predicate: 'true' }] });
  expect(await me(await sign(p.keys[0], claims({ iss: p.iss }))), 200);
  assert.equal(p.srv.fetches, 1, 'one fetch primes the cache');
  await sleep(700); // past the 500 ms refetch window
  const unknown = await makeKey('RS256');
  const toks = await Promise.all(Array.from({ length: 100 }, () => sign(unknown, claims({ iss: p.iss }))));
  const t0 = Date.now();
  const res = await Promise.all(toks.map((t) => me(t)));
  const elapsed = Date.now() - t0;
  for (const r of res) assertUnauthorized(r);
  const refetches = p.srv.fetches - 1;
  const bound = Math.max(2, 1 + Math.floor(elapsed / 500));
  t.diagnostic(`${refetches} refetch(es) for 100 concurrent unknown-kid requests in ${elapsed} ms`);
  assert.ok(refetches >= 1, 'an unknown kid triggers a refetch');
  assert.ok(refetches <= bound, `${refetches} refetches for 100 concurrent requests in ${elapsed} ms (bound ${bound})`);

  // Rotated in: accepted after a refetch.
  p.srv.addKey(unknown.jwk);
  const ok = await eventually(async () => (await me(await sign(unknown, claims({ iss: p.iss })))).status === 200, 15000, 250);
  assert.ok(ok, 'rotated key never accepted');
});

test('100 concurrent requests on a cold cache share one fetch, and all succeed', async (t) => {
  const p = await provider(['ES256'], { roles: [{ role: 'server-readonly', predicate: 'true' }] });
  p.srv.state.delayMs = 200; // a slow provider: every request arrives while the fetch runs
  const toks = await Promise.all(Array.from({ length: 100 }, () => sign(p.keys[0], claims({ iss: p.iss }))));
  const res = await Promise.all(toks.map((t) => me(t)));
  const statuses = res.map((r) => r.status);
  assert.deepEqual(statuses.filter((s) => s !== 200), [], `not all accepted: ${[...new Set(statuses)]}`);
  t.diagnostic(`${p.srv.fetches} fetch(es) for 100 concurrent requests on a cold cache`);
  assert.ok(p.srv.fetches >= 1 && p.srv.fetches <= 2, `${p.srv.fetches} fetches for one cold key set`);
});

test('provider down: an already-cached kid keeps working; an unknown kid is the uniform 401', async () => {
  const p = await provider(['RS256', 'EdDSA'], { roles: [{ role: 'server-readonly', predicate: 'true' }] });
  expect(await me(await sign(p.keys[0], claims({ iss: p.iss }))), 200);
  await p.srv.stop();
  try {
    // New tokens (nothing cached per token) with both cached keys.
    for (let i = 0; i < 3; i++) {
      expect(await me(await sign(p.keys[0], claims({ iss: p.iss }))), 200);
      expect(await me(await sign(p.keys[1], claims({ iss: p.iss }))), 200);
    }
    const unknown = await makeKey('RS256');
    await sleep(700);
    assertUnauthorized(await me(await sign(unknown, claims({ iss: p.iss }))));
    await sleep(700);
    // The failed refetch did not drop the last good set.
    expect(await me(await sign(p.keys[0], claims({ iss: p.iss }))), 200);
  } finally {
    await p.srv.start();
  }
  // Back up: still fine.
  expect(await me(await sign(p.keys[1], claims({ iss: p.iss }))), 200);
});

test('a JWKS endpoint that was never reachable: the uniform 401, no 5xx', async () => {
  const k = await makeKey('RS256');
  const srv = await startJwksServer([k.jwk]);
  await srv.stop();
  const name = uniqueName('down');
  const iss = `https://${name}.blackbox.test`;
  expect(await admin.post('/v1/access-providers', { name, issuer: iss, jwks_uri: srv.url, roles: [{ role: 'server-readonly', predicate: 'true' }] }), 201);
  assertUnauthorized(await me(await sign(k, claims({ iss }))));
});

// ---------------------------------------------------------------------------------------------
// AccessProvider CRUD and validation

test('AccessProvider CRUD: POST/GET/PUT/DELETE by admin; 403 for server keys, 401 anonymous', async () => {
  const k = await makeKey('ES256');
  const srv = await startJwksServer([k.jwk]);
  stopped.push(srv);
  const name = uniqueName('crud');
  const body = {
    name,
    issuer: `https://${name}.example/`,
    jwks_uri: srv.url,
    audience: 'https://api.example.com',
    algorithms: ['RS256', 'ES256'],
    clock_skew: 10,
    roles: [{ role: 'server-readonly', predicate: '"ops" in claims.groups' }],
    provision: { collection: people, data: { email: 'claims.email' } },
    allow_outlive: false,
  };
  const created = expect(await admin.post('/v1/access-providers', body), 201);
  for (const [k2, v] of Object.entries(body)) assert.deepEqual(created[k2], v, `${k2}: ${JSON.stringify(created)}`);
  const got = expect(await admin.get(`/v1/access-providers/${name}`), 200);
  for (const [k2, v] of Object.entries(body)) assert.deepEqual(got[k2], v, `GET ${k2}`);
  const list = expect(await admin.get('/v1/access-providers'), 200);
  assert.ok(list.data.some((p) => p.name === name), 'listed');
  assert.ok(list.data.some((p) => p.name === 'minter'), 'listed');

  // Defaults.
  const name2 = uniqueName('dflt');
  const d = expect(await admin.post('/v1/access-providers', { name: name2, issuer: `https://${name2}.example`, jwks_uri: srv.url }), 201);
  assert.equal(d.audience, AUD, 'audience defaults to API_EXTERNAL_URL');
  assert.deepEqual([...d.algorithms].sort(), [...ALGS].sort(), 'algorithms default to all of them');
  assert.equal(d.clock_skew, 30);
  assert.equal(d.allow_outlive, false);

  // PUT replaces; the name cannot change.
  const put = expect(await admin.put(`/v1/access-providers/${name}`, { ...body, clock_skew: 60, roles: [] }), 200);
  assert.equal(put.clock_skew, 60);
  assert.deepEqual(put.roles ?? [], []);
  assertV1Error(await admin.put(`/v1/access-providers/${name}`, { ...body, name: 'renamed' }), 400, 'invalid_request');
  assert.equal(expect(await admin.get(`/v1/access-providers/${name}`), 200).clock_skew, 60);

  // Who may: admin only.
  for (const who of [keys.server, keys.readonly, keys.client]) {
    assertForbidden(await who.get('/v1/access-providers'));
    assertForbidden(await who.get(`/v1/access-providers/${name}`));
    assertForbidden(await who.post('/v1/access-providers', { ...body, name: uniqueName('x'), issuer: 'https://x.example' }));
    assertForbidden(await who.put(`/v1/access-providers/${name}`, body));
    assertForbidden(await who.del(`/v1/access-providers/${name}`));
  }
  for (const anon of [caller(server, null), caller(server, server.anonKey)]) {
    assertUnauthorized(await anon.get('/v1/access-providers'));
    assertUnauthorized(await anon.post('/v1/access-providers', { ...body, name: uniqueName('x'), issuer: 'https://y.example' }));
    assertUnauthorized(await anon.del(`/v1/access-providers/${name}`));
  }

  expect(await admin.del(`/v1/access-providers/${name}`), 204);
  assertV1Error(await admin.get(`/v1/access-providers/${name}`), 404, 'not_found');
  assertV1Error(await admin.del(`/v1/access-providers/${name}`), 404, 'not_found');
  assertV1Error(await admin.put(`/v1/access-providers/${name}`, body), 404, 'not_found');
  expect(await admin.del(`/v1/access-providers/${name2}`), 204);
});

test('AccessProvider validation: 400 invalid_request (HS*, none, http jwks_uri, bad predicate with its column, unknown member...); 409 duplicate issuer', async (t) => {
  const base = () => {
    const name = uniqueName('v');
    return { name, issuer: `https://${name}.example`, jwks_uri: 'https://idp.example/jwks.json' };
  };
  const bad = {
    'HS256 in algorithms': { algorithms: ['RS256', 'HS256'] },
    'HS512 in algorithms': { algorithms: ['HS512'] },
    'none in algorithms': { algorithms: ['none'] },
    'unknown algorithm': { algorithms: ['RS1024'] },
    'empty algorithms': { algorithms: [] },
    'http jwks_uri off loopback': { jwks_uri: 'http://idp.example/jwks.json' },
    'jwks_uri not a URL': { jwks_uri: 'jwks.json' },
    'unknown member': { colour: 'blue' },
    'clock_skew over 300': { clock_skew: 301 },
    'negative clock_skew': { clock_skew: -1 },
    'clock_skew a string': { clock_skew: '30' },
    'unknown role': { roles: [{ role: 'superuser', predicate: 'true' }] },
    'roles not an array': { roles: { role: 'server' } },
    'allow_outlive not a boolean': { allow_outlive: 'yes' },
    'missing issuer': { issuer: undefined },
    'missing jwks_uri': { jwks_uri: undefined },
    'provision without collection': { provision: { data: { email: 'claims.email' } } },
    'bad name': { name: 'has space' },
  };
  for (const [what, patch] of Object.entries(bad)) {
    const body = { ...base(), ...patch };
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    const res = await admin.post('/v1/access-providers', body);
    assert.equal(res.status, 400, `${what}: ${res.status} ${res.text}`);
    assertV1Error(res, 400, 'invalid_request');
  }
  // Bad predicates: refused with the column in the message.
  for (const pred of ['"ops" in', 'claims.groups ==', '"ops" in claims.groups &&', 'claims.x == "a" ||| claims.y == "b"', 'claims.tier = "gold"', 'size(claims.groups) > "2"']) {
    const res = await admin.post('/v1/access-providers', { ...base(), roles: [{ role: 'server', predicate: pred }] });
    assertV1Error(res, 400, 'invalid_request');
    t.diagnostic(`predicate ${JSON.stringify(pred)} → ${res.body.error.message}`);
    assert.match(res.body.error.message, /column \d+/i, `predicate ${JSON.stringify(pred)}: no column in ${res.text}`);
  }
  // http is fine on loopback.
  const lo = base();
  expect(await admin.post('/v1/access-providers', { ...lo, jwks_uri: 'http://127.0.0.1:9/jwks.json' }), 201);
  // Duplicate issuer (another name) and duplicate name: 409.
  const dupIss = await admin.post('/v1/access-providers', { ...base(), issuer: lo.issuer });
  assertV1Error(dupIss, 409, 'conflict');
  const dupName = await admin.post('/v1/access-providers', { ...base(), name: lo.name });
  assertV1Error(dupName, 409, 'conflict');
  // Bad JSON.
  assertV1Error(await v1(server, 'POST', '/v1/access-providers', { as: admin.secret, rawBody: '{"name":' }), 400, 'invalid_request');
  expect(await admin.del(`/v1/access-providers/${lo.name}`), 204);
});

// ---------------------------------------------------------------------------------------------
// Roles and provisioning

test('role predicates: "ops" in claims.groups → server-readonly (reads, cannot write); no match, no identity → 401', async () => {
  const docsColl = await createCollection(admin, uniqueName('data'));
  await createDoc(admin, docsColl, { id: 'one', data: { n: 1 } });
  const p = await provider(['ES256'], {
    roles: [
      { role: 'server-readonly', predicate: '"ops" in claims.groups' },
      { role: 'server', predicate: 'claims.tier == "gold" && "ops" in claims.groups' },
    ],
  });
  const [k] = p.keys;
  const ops = await sign(k, claims({ iss: p.iss, groups: ['dev', 'ops'] }));
  const r = caller(server, ops);
  const m = expect(await r.get('/v1/me'), 200);
  assert.equal(m.identity, null);
  assert.equal(m.credential.kind, 'jwt');
  if (m.credential.role !== undefined) assert.equal(m.credential.role, 'server-readonly');
  const list = expect(await r.get(`/v1/collections/${docsColl}/documents`), 200);
  assert.deepEqual(list.data.map((d) => d.id), ['one']);
  assertForbidden(await r.post(`/v1/collections/${docsColl}/documents`, { data: { n: 2 } }));
  assertForbidden(await r.del(`/v1/collections/${docsColl}/documents/one`));
  assertForbidden(await r.post('/v1/access-providers', { name: uniqueName('x'), issuer: 'https://z.example', jwks_uri: 'https://z.example/j' }));

  // The highest role whose predicate holds: server (may write).
  const gold = caller(server, await sign(k, claims({ iss: p.iss, groups: ['ops'], tier: 'gold' })));
  expect(await gold.post(`/v1/collections/${docsColl}/documents`, { id: 'two', data: { n: 2 } }), 201);

  // gold but not ops: neither predicate holds. No match, no identity, no provision → 401.
  for (const c of [
    { groups: ['dev'] },
    { groups: [] },
    {},
    { groups: 'ops' }, // not an array
    { groups: ['OPS'] },
    { tier: 'gold', groups: ['dev'] },
  ]) {
    assertUnauthorized(await me(await sign(k, claims({ iss: p.iss, ...c }))));
  }
});

test('provision: a document with the mapped claims; a second token of the same sub reaches it; identities by (iss, sub) only, never by e-mail', async () => {
  const s = sub('prov');
  const t1 = await sign(K.ES256, claims({ sub: s, email: `${s}@example.com`, org: { dept: 'R&D' }, name: 'ignored' }));
  const m1 = expect(await me(t1), 200);
  assert.equal(m1.identity.collection, people);
  assert.deepEqual(m1.document.data, { email: `${s}@example.com`, dept: 'R&D' }, 'only the mapped members, from the claims');
  const stored = expect(await admin.get(`/v1/collections/${people}/documents/${m1.identity.id}`), 200);
  assert.deepEqual(stored.data, m1.document.data);

  // Another token (other key, other claims) of the same sub: the same document, not re-provisioned.
  const m2 = expect(await me(await sign(K.RS512, claims({ sub: s, email: 'changed@example.com' }))), 200);
  assert.deepEqual(m2.identity, m1.identity);
  assert.equal(m2.document.data.email, `${s}@example.com`);

  // Another sub with the same e-mail: another document.
  const m3 = expect(await me(await sign(K.ES256, claims({ email: `${s}@example.com` }))), 200);
  assert.notDeepEqual(m3.identity, m1.identity);

  // The same sub at another issuer is another identity.
  const p = await provider(['ES256'], { provision: { collection: people, data: { email: 'claims.email' } } });
  const m4 = expect(await me(await sign(p.keys[0], claims({ iss: p.iss, sub: s, email: `${s}@example.com` }))), 200);
  assert.notDeepEqual(m4.identity, m1.identity);

  // Deleting and re-creating the provider keeps the links.
  const def = expect(await admin.get(`/v1/access-providers/${p.name}`), 200);
  expect(await admin.del(`/v1/access-providers/${p.name}`), 204);
  assertUnauthorized(await me(await sign(p.keys[0], claims({ iss: p.iss, sub: s }))));
  const { created_at: _c, updated_at: _u, ...again } = def;
  expect(await admin.post('/v1/access-providers', again), 201);
  const m5 = expect(await me(await sign(p.keys[0], claims({ iss: p.iss, sub: s }))), 200);
  assert.deepEqual(m5.identity, m4.identity, 're-creating the provider finds its identities again');

  // The provisioned document deleted: its tokens are refused or provision a new one, never the old id.
  expect(await admin.del(`/v1/collections/${people}/documents/${m1.identity.id}`), 204);
  const after = await me(await sign(K.ES256, claims({ sub: s, email: `${s}@example.com` })));
  if (after.status === 200) assert.notEqual(after.body.identity.id, m1.identity.id, 'a deleted identity never revives');
  else assertUnauthorized(after);
});

// ---------------------------------------------------------------------------------------------
// Token exchange

async function exchange(body, { form = false, as } = {}) {
  const headers = {};
  let payload;
  if (form) {
    headers['Content-Type'] = 'application/x-www-form-urlencoded';
    payload = new URLSearchParams(body).toString();
  } else {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  if (as) headers.Authorization = `Bearer ${as}`;
  const res = await trackedFetch(`${server.url}/v1/oauth/token`, { method: 'POST', headers, body: payload });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, body: parsed, req: `POST /v1/oauth/token ${payload.slice(0, 200)}` };
}

function assertOAuthError(res, code) {
  assert.equal(res.status, 400, `${code}: ${res.req} → ${res.status} ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(res.body?.error, code, `${res.req} → ${res.text}`);
  assert.deepEqual(Object.keys(res.body).sort(), ['error', 'error_description'].filter((k) => k in res.body).sort());
  if ('error_description' in res.body) assert.equal(typeof res.body.error_description, 'string');
}

test('token exchange errors in the RFC 6749 §5.2 shape', async () => {
  const good = await sign(K.RS256, claims({ email: 'x@example.com' }));
  const base = { grant_type: URN.exchange, subject_token: good, subject_token_type: URN.jwt };
  for (const form of [false, true]) {
    assertOAuthError(await exchange({ ...base, grant_type: 'password' }, { form }), 'unsupported_grant_type');
    assertOAuthError(await exchange({ ...base, grant_type: 'client_credentials' }, { form }), 'unsupported_grant_type');
    assertOAuthError(await exchange((({ subject_token: _s, ...b }) => b)(base), { form }), 'invalid_request');
    assertOAuthError(await exchange((({ subject_token_type: _s, ...b }) => b)(base), { form }), 'invalid_request');
    assertOAuthError(await exchange({ ...base, subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' }, { form }), 'invalid_request');
    assertOAuthError(await exchange({ ...base, requested_token_type: 'urn:ietf:params:oauth:token-type:refresh_token' }, { form }), 'invalid_request');
  }
  // missing grant_type: invalid_request (or unsupported_grant_type)
  const ng = await exchange((({ grant_type: _g, ...b }) => b)(base));
  assert.equal(ng.status, 400, ng.text);
  assert.ok(['invalid_request', 'unsupported_grant_type'].includes(ng.body?.error), ng.text);
  // Ill-typed (JSON): invalid_request.
  assertOAuthError(await exchange({ ...base, subject_token: 5 }), 'invalid_request');
  assertOAuthError(await exchange({ ...base, audience: ['a', 'b'] }), 'invalid_request');

  // invalid_grant for every bad subject token, one message.
  const t = now();
  const bads = [
    await sign(K.RS256, claims({ exp: t - 600, iat: t - 900 })),
    await sign(K.RS256, claims({ aud: 'https://elsewhere.example' })),
    await sign(K.RS256, claims({ iss: 'https://unknown-issuer.example' })),
    await sign(await makeKey('RS256', K.RS256.kid), claims()),
    `${b64json({ alg: 'none' })}.${b64json(claims())}.`,
    'not-a-jwt',
  ];
  const messages = new Set();
  for (const st of bads) {
    const res = await exchange({ ...base, subject_token: st });
    assertOAuthError(res, 'invalid_grant');
    messages.add(res.body.error_description);
  }
  assert.equal(messages.size, 1, `one message whatever the reason: ${[...messages].join(' | ')}`);

  // A valid subject token with no identity (role only, no provision): invalid_grant.
  const p = await provider(['ES256'], { roles: [{ role: 'server-readonly', predicate: 'true' }] });
  assertOAuthError(await exchange({ ...base, subject_token: await sign(p.keys[0], claims({ iss: p.iss })) }), 'invalid_grant');

  // And a good one still works (form body).
  const ok = await exchange(base, { form: true });
  assert.equal(ok.status, 200, ok.text);
});

test('token exchange: expires with the subject token (never later), allow_outlive lets it; the issued JWT dies with its identity', async () => {
  const s = sub('xchg');
  const t = now();
  const st = await sign(K.EdDSA, claims({ sub: s, exp: t + 60, email: `${s}@example.com` }));
  const who = expect(await me(st), 200).identity;
  for (const requested of [URN.access, URN.tst]) {
    const res = await exchange({ grant_type: URN.exchange, subject_token: st, subject_token_type: URN.jwt, requested_token_type: requested });
    const b = expect(res, 200);
    assert.equal(b.issued_token_type, requested);
    assert.ok(b.expires_in > 0 && b.expires_in <= t + 60 - now() + 1, `${requested}: expires_in ${b.expires_in} outlives the subject (${t + 60 - now()} s left)`);
    if (requested === URN.access) assert.ok(jwtPayload(b.access_token).exp <= t + 60);
    else assert.match(b.access_token, TST_RE);
    assert.deepEqual(expect(await me(b.access_token), 200).identity, who);
  }

  // allow_outlive: the issued token may outlive the subject token.
  const coll = await createCollection(admin, uniqueName('outlive'));
  const p = await provider(['ES256'], { allow_outlive: true, provision: { collection: coll, data: {} } });
  const st2 = await sign(p.keys[0], claims({ iss: p.iss, exp: now() + 60 }));
  const r2 = await exchange({ grant_type: URN.exchange, subject_token: st2, subject_token_type: URN.jwt });
  const b2 = expect(r2, 200);
  assert.ok(b2.expires_in > 120, `allow_outlive: expires_in ${b2.expires_in}`);
  const r3 = await exchange({ grant_type: URN.exchange, subject_token: st2, subject_token_type: URN.jwt, requested_token_type: URN.tst });
  assert.ok(expect(r3, 200).expires_in > 120, `allow_outlive tst: ${r3.text}`);

  // The issued JWT works while its identity lives.
  const id2 = expect(await me(b2.access_token), 200).identity;
  expect(await admin.del(`/v1/collections/${id2.collection}/documents/${id2.id}`), 204);
  assertUnauthorized(await me(b2.access_token));
  assertUnauthorized(await me(expect(r3, 200).access_token));
});

// ---------------------------------------------------------------------------------------------
// Last: ETag revalidation, primed in before(); its minute has mostly passed by now.

test('JWKS revalidation: max-age below the bound is raised to 1 min; the refresh is a conditional GET (If-None-Match → 304) and the key keeps working', { timeout: 180000 }, async () => {
  const { key, srv, iss, primedAt } = etag;
  const st = srv.state;
  // Served with max-age=1, yet no request may have gone out before a minute.
  const early = st.requests.filter((r) => r.at - primedAt < 55000);
  assert.equal(early.length, 1, `refetched before the 1 min lower bound: ${JSON.stringify(st.requests)}`);
  const wait = primedAt + 61000 - Date.now();
  if (wait > 0) await sleep(wait);
  let last;
  const seenConditional = await eventually(async () => {
    last = await me(await sign(key, claims({ iss })));
    assert.equal(last.status, 200, last.text);
    return st.conditional > 0;
  }, 30000, 500);
  assert.ok(seenConditional, `no conditional refresh after the max-age passed: ${JSON.stringify(st.requests)}`);
  const cond = st.requests.find((r) => r.ifNoneMatch);
  assert.match(cond.ifNoneMatch, /^"[0-9a-f]{16}"$/, 'If-None-Match carries the ETag served');
  assert.ok(st.notModified >= 1, 'the minter answered 304');
  assert.equal(st.fetches, 1, 'no full fetch: the set was revalidated');
  // After the 304, the cached set keeps serving.
  await sleep(200);
  expect(await me(await sign(key, claims({ iss }))), 200);
});
