// Native API (/v1): the sessions ledger of an identity (/v1/me/sessions, /v1/identities/{id}/
// sessions) and the sweeper (SWEEP_INTERVAL, `tessera token sweep`): expired rows are deleted,
// expiry is enforced before they are, and requests never fail while a large sweep runs.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, finish, test, sleep } from '../lib/server.mjs';
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
  timeMs,
  login,
  cli,
  dbQuery,
  eventually,
  nowUs,
} from '../lib/v1.mjs';

let server;
let keys;
let admin;
let coll;
const PW = 'correct horse battery';

before(async () => {
  server = await startServer({});
  keys = await setupKeys(server);
  admin = keys.admin;
  coll = await createCollection(admin, uniqueName('ledger'));
});

after(async () => {
  await finish(server);
});

const me = (secret, s = server) => v1(s, 'GET', '/v1/me', { as: secret });

async function identity(a = admin, c = coll) {
  const id = uniqueName('who');
  await createDoc(a, c, { id, data: {}, credentials: { password: PW } });
  return id;
}

test('/v1/me/sessions lists the identity\'s tokens and bound keys (no secret); deleting an item ends it', async () => {
  const id = await identity();
  const t1 = await login(server, { collection: coll, id, password: PW });
  const t2 = await login(server, { collection: coll, id, password: PW });
  const t3 = expect(await admin.post('/v1/tokens', { identity: { collection: coll, id } }), 201).token;
  const k = expect(await admin.post('/v1/keys', { role: 'server', identity: { collection: coll, id } }), 201).key;
  const otherId = await identity();
  const tOther = await login(server, { collection: coll, id: otherId, password: PW });

  const self = caller(server, t1.secret);
  const l = expect(await self.get('/v1/me/sessions'), 200);
  assert.deepEqual(l.identity, { collection: coll, id });
  assert.deepEqual(l.sessions, [], 'documents have no GoTrue sessions');
  assert.deepEqual(l.tokens.map((x) => x.id).sort(), [t1.id, t2.id, t3.id].sort());
  assert.deepEqual(l.keys.map((x) => x.id), [k.id]);
  assert.ok(!/tst_|tsk_/.test(JSON.stringify(l)), 'no secret in the ledger');
  for (const x of l.tokens) {
    assert.deepEqual(x.identity, { collection: coll, id });
    timeMs(x.created_at);
    timeMs(x.expires_at);
  }
  assert.equal(l.keys[0].role, 'server');
  // The caller's own token is marked current (docs/API.md examples); the others are not.
  assert.deepEqual(l.tokens.filter((x) => x.current === true).map((x) => x.id), [t1.id]);
  const byAdmin = expect(await admin.get(`/v1/identities/${id}/sessions?collection=${coll}`), 200);
  assert.ok(byAdmin.tokens.every((x) => x.current === undefined), 'no "current" in an admin\'s view');
  // The same through the bound key.
  const viaKey = expect(await v1(server, 'GET', '/v1/me/sessions', { as: k.secret }), 200);
  assert.deepEqual(viaKey.tokens.map((x) => x.id).sort(), l.tokens.map((x) => x.id).sort());

  expect(await self.del(`/v1/me/sessions/${t2.id}`), 204);
  assertUnauthorized(await me(t2.secret));
  expect(await self.del(`/v1/me/sessions/${k.id}`), 204);
  assertUnauthorized(await me(k.secret));
  // Not the identity's: 404, and it keeps working.
  assertV1Error(await self.del(`/v1/me/sessions/${tOther.id}`), 404, 'not_found');
  expect(await me(tOther.secret), 200);
  assertV1Error(await self.del(`/v1/me/sessions/${keys.server.key.id}`), 404, 'not_found');
  expect(await me(keys.server.secret), 200);
  assertV1Error(await self.del('/v1/me/sessions/00000000-0000-4000-8000-000000000000'), 404, 'not_found');
  const after2 = expect(await self.get('/v1/me/sessions'), 200);
  assert.deepEqual(after2.tokens.map((x) => x.id).sort(), [t1.id, t3.id].sort());
  assert.deepEqual(after2.keys, []);
  // A caller may end its own token this way too.
  expect(await self.del(`/v1/me/sessions/${t1.id}`), 204);
  assertUnauthorized(await me(t1.secret));
  expect(await me(t3.secret), 200);

  // A key bound to no identity gets identity:null and only itself under keys; the
  // service_role JWT gets identity:null.
  const kl = expect(await keys.server.get('/v1/me/sessions'), 200);
  assert.equal(kl.identity, null);
  assert.deepEqual(kl.keys.map((x) => x.id), [keys.server.key.id]);
  assert.equal(kl.keys[0].secret, undefined);
  assert.deepEqual(kl.tokens, []);
  assert.deepEqual(kl.sessions, []);
  const jl = expect(await v1(server, 'GET', '/v1/me/sessions', { as: server.serviceKey }), 200);
  assert.equal(jl.identity, null);
  assert.deepEqual(jl.tokens, []);
});

test('/v1/identities/{id}/sessions: read by admin, server, readonly; written by admin and server; 409 when the id is ambiguous', async () => {
  const id = await identity();
  const t1 = await login(server, { collection: coll, id, password: PW });
  const t2 = await login(server, { collection: coll, id, password: PW });
  const path = `/v1/identities/${id}/sessions`;
  for (const who of [admin, keys.server, keys.readonly]) {
    const l = expect(await who.get(path), 200);
    assert.deepEqual(l.identity, { collection: coll, id });
    assert.deepEqual(l.tokens.map((x) => x.id).sort(), [t1.id, t2.id].sort());
    assert.deepEqual(expect(await who.get(`${path}?collection=${coll}`), 200), l);
  }
  for (const who of [keys.client, caller(server, t1.secret)]) assertForbidden(await who.get(path));
  for (const who of [caller(server, server.anonKey), caller(server, undefined)]) assertUnauthorized(await who.get(path));
  assertForbidden(await keys.readonly.del(`${path}/${t1.id}`));
  expect(await me(t1.secret), 200);
  expect(await keys.server.del(`${path}/${t1.id}?collection=${coll}`), 204);
  assertUnauthorized(await me(t1.secret));
  expect(await me(t2.secret), 200);
  assertV1Error(await admin.del(`${path}/${t1.id}`), 404, 'not_found');

  // The same id in two collections: ?collection= is required.
  const c2 = await createCollection(admin);
  await createDoc(admin, c2, { id, data: {} });
  assertV1Error(await admin.get(path), 409, 'conflict');
  assert.deepEqual(expect(await admin.get(`${path}?collection=${coll}`), 200).tokens.map((x) => x.id), [t2.id]);
  assert.deepEqual(expect(await admin.get(`${path}?collection=${c2}`), 200).tokens, []);
  assertV1Error(await admin.del(`${path}/${t2.id}`), 409, 'conflict');
  assertV1Error(await admin.del(`${path}/${t2.id}?collection=${c2}`), 404, 'not_found');
  expect(await me(t2.secret), 200);
  // Unknown ids.
  assertV1Error(await admin.get('/v1/identities/nobody-here/sessions'), 404, 'not_found');
  assertV1Error(await admin.get(`${path}?collection=${uniqueName('none')}`), 404, 'not_found');
});

/** Counts from `tessera token sweep` (JSON or text such as "tokens: 3"). */
function sweepCounts(out) {
  try {
    const j = JSON.parse(out);
    if (j && typeof j === 'object') return j;
  } catch {
    // text
  }
  const text = out.replace(/refresh[ _-]tokens/gi, 'refresh_tokens');
  const counts = {};
  for (const kind of ['tokens', 'keys', 'documents', 'sessions', 'refresh_tokens']) {
    const after = new RegExp(`(?<![A-Za-z_])${kind}\\b[^0-9\\n]{0,12}?(\\d+)`, 'i').exec(text);
    const before = new RegExp(`(\\d+)\\s+(?:expired\\s+)?${kind}\\b`, 'i').exec(text);
    const m = before ?? after;
    if (m) counts[kind] = Number(m[1]);
  }
  return counts;
}

test('expiry is enforced without the sweeper; `tessera token sweep` deletes the rows and prints the counts', async () => {
  const s = await startServer({ SWEEP_INTERVAL: '0' });
  try {
    const k = await setupKeys(s);
    const c = await createCollection(k.admin);
    const id = await identity(k.admin, c);
    const mortal = uniqueName('mortal');
    await createDoc(k.admin, c, { id: mortal, data: {}, credentials: { password: PW }, ttl: 1 });
    const short = [];
    for (let i = 0; i < 30; i++) short.push(await login(s, { collection: c, id, password: PW, ttl: 1 }));
    const shortKeys = [];
    for (let i = 0; i < 3; i++) shortKeys.push(expect(await k.admin.post('/v1/keys', { role: 'server', ttl: 1 }), 201).key);
    const live = await login(s, { collection: c, id, password: PW });
    const liveKey = expect(await k.admin.post('/v1/keys', { role: 'server' }), 201).key;
    await sleep(1600);
    for (const t of short.slice(0, 5)) assertUnauthorized(await me(t.secret, s));
    assertUnauthorized(await me(shortKeys[0].secret, s));
    assertV1Error(await k.admin.get(`/v1/collections/${c}/documents/${mortal}`), 404, 'not_found');
    // The rows are still there: expiry does not wait for the sweep.
    const expired = Number(dbQuery(s, `SELECT count(*) FROM tokens WHERE expires_at <= ${nowUs()}`)[0]);
    assert.ok(expired >= 33, `expired rows before the sweep: ${expired}`);

    const r = cli(s, ['token', 'sweep']);
    assert.equal(r.code, 0, `${r.out}\n${r.err}`);
    const counts = sweepCounts(r.out);
    assert.ok(counts.tokens >= 30, `token sweep printed: ${r.out}`);
    assert.ok(counts.keys >= 3, `token sweep printed: ${r.out}`);
    assert.ok(counts.documents >= 1, `token sweep printed: ${r.out}`);
    assert.equal(Number(dbQuery(s, `SELECT count(*) FROM tokens WHERE expires_at <= ${nowUs()}`)[0]), 0);
    assert.equal(Number(dbQuery(s, `SELECT count(*) FROM documents WHERE id = '${mortal}'`)[0]), 0);
    const again = sweepCounts(cli(s, ['token', 'sweep']).out);
    assert.equal(again.tokens, 0);
    assert.equal(again.keys, 0);
    assert.equal(again.documents, 0);
    // Live secrets are untouched.
    expect(await me(live.secret, s), 200);
    expect(await me(liveKey.secret, s), 200);
  } finally {
    const info = await s.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});

test('the sweeper (SWEEP_INTERVAL=1s) deletes expired tokens, keys and documents by itself', async () => {
  const s = await startServer({ SWEEP_INTERVAL: '1s' });
  try {
    const k = await setupKeys(s);
    const c = await createCollection(k.admin);
    const id = await identity(k.admin, c);
    const mortal = uniqueName('mortal');
    await createDoc(k.admin, c, { id: mortal, data: {}, credentials: { password: PW }, ttl: 1 });
    const mortalTok = await login(s, { collection: c, id: mortal, password: PW });
    for (let i = 0; i < 20; i++) await login(s, { collection: c, id, password: PW, ttl: 1 });
    for (let i = 0; i < 2; i++) expect(await k.admin.post('/v1/keys', { role: 'client', ttl: 1 }), 201);
    const live = await login(s, { collection: c, id, password: PW });
    const count = (sql) => Number(dbQuery(s, sql)[0]);
    const gone = await eventually(
      () =>
        count(`SELECT count(*) FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ${nowUs()}`) === 0 &&
        count(`SELECT count(*) FROM documents WHERE id = '${mortal}'`) === 0 &&
        count(`SELECT count(*) FROM tokens WHERE id = '${mortalTok.id}'`) === 0,
      12000,
      250,
    );
    assert.ok(gone, 'the sweeper left expired rows after 12 s');
    expect(await me(live.secret, s), 200);
    assertUnauthorized(await me(mortalTok.secret, s));
  } finally {
    const info = await s.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});

test('no request fails while the sweeper deletes thousands of expired tokens', async () => {
  // one identity hammers from several clients: lift its profile budget (RATE_LIMIT_PROFILE_DEFAULT)
  const s = await startServer({ SWEEP_INTERVAL: '1s', SWEEP_BATCH: '200', RATE_LIMIT_PROFILE_DEFAULT: '0' });
  try {
    const k = await setupKeys(s);
    const c = await createCollection(k.admin);
    const id = await identity(k.admin, c);
    const live = await login(s, { collection: c, id, password: PW });
    // Every token expires at one instant, a few seconds ahead, so that one sweep meets them all.
    const expiresAt = Date.now() + 7000;
    const ttl = new Date(expiresAt).toISOString();
    const target = 2000;
    let made = 0;
    const creators = Array.from({ length: 12 }, async () => {
      while (made < target && Date.now() < expiresAt - 1500) {
        made++;
        const r = await k.admin.post('/v1/tokens', { identity: { collection: c, id }, ttl });
        assert.equal(r.status, 201, r.text);
      }
    });
    await Promise.all(creators);
    // About 3 s for 2,000 on a 2-core machine (either backend); slower builds make fewer.
    assert.ok(made >= 200, `only ${made} tokens were made in time`);
    const count = () => Number(dbQuery(s, `SELECT count(*) FROM tokens WHERE expires_at <= ${expiresAt * 1000}`)[0]);
    assert.ok(count() >= made, 'the tokens are stored');

    const statuses = new Map();
    let stop = false;
    let requests = 0;
    const hammer = Array.from({ length: 6 }, async (_, w) => {
      while (!stop) {
        const r =
          w === 0
            ? await k.admin.get(`/v1/tokens?collection=${c}&identity=${id}&size=50`)
            : w === 1
              ? await k.server.post('/v1/tokens', { identity: { collection: c, id }, ttl: 60 })
              : await me(live.secret, s);
        requests++;
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      }
    });
    const swept = await eventually(() => Date.now() > expiresAt && count() === 0, 20000, 200);
    await sleep(300);
    stop = true;
    await Promise.all(hammer);
    assert.ok(swept, `the sweeper left ${count()} of ${made} expired tokens`);
    const bad = [...statuses].filter(([st]) => st !== 200 && st !== 201);
    assert.deepEqual(bad, [], `non-2xx answers during the sweep: ${JSON.stringify([...statuses])}`);
    assert.ok(requests > 100, `only ${requests} requests ran during the sweep`);
    expect(await me(live.secret, s), 200);
  } finally {
    const info = await s.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});

test('a sweep of 100,000 expired tokens: every one deleted, not one request failed meanwhile', async () => {
  // The figure. The rows go straight into the database (making them over HTTP would
  // take minutes); the sweeper then meets them at its next pass, with requests running.
  const s = await startServer({ SWEEP_INTERVAL: '1s', RATE_LIMIT_PROFILE_DEFAULT: '0' });
  try {
    const k = await setupKeys(s);
    const c = await createCollection(k.admin);
    const id = await identity(k.admin, c);
    const live = await login(s, { collection: c, id, password: PW });
    const N = 100000;
    const past = (Date.now() - 3600_000) * 1000;
    const seed =
      s.backend === 'sqlite'
        ? `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${N})
           INSERT INTO tokens(id, hash, kind, identity_collection, identity_id, origin, created_at, expires_at)
           SELECT printf('00000000-0000-4000-8000-%012d', i), randomblob(32), 'token', '${c}', '${id}', 'login',
                  ${past} - 1000000, ${past} FROM n;`
        : `INSERT INTO tokens(id, hash, kind, identity_collection, identity_id, origin, created_at, expires_at)
           SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'),
                  decode(md5('a' || i::text) || md5('b' || i::text), 'hex'), 'token', '${c}', '${id}', 'login',
                  ${past} - 1000000, ${past} FROM generate_series(1, ${N}) AS i;`;
    dbQuery(s, seed);
    const count = () => Number(dbQuery(s, `SELECT count(*) FROM tokens WHERE expires_at <= ${past}`)[0]);
    const statuses = new Map();
    let stop = false;
    let requests = 0;
    const hammer = Array.from({ length: 6 }, async (_, w) => {
      while (!stop) {
        const r =
          w === 0
            ? await k.admin.get(`/v1/tokens?collection=${c}&identity=${id}&size=20`)
            : w === 1
              ? await k.server.post('/v1/tokens', { identity: { collection: c, id }, ttl: 60 })
              : await me(live.secret, s);
        requests++;
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      }
    });
    const swept = await eventually(() => count() === 0, 120000, 500);
    await sleep(300);
    stop = true;
    await Promise.all(hammer);
    assert.ok(swept, `the sweeper left ${count()} of ${N} expired tokens`);
    const bad = [...statuses].filter(([st]) => st !== 200 && st !== 201);
    assert.deepEqual(bad, [], `non-2xx answers during the sweep: ${JSON.stringify([...statuses])}`);
    assert.ok(requests > 100, `only ${requests} requests ran during the sweep`);
    expect(await me(live.secret, s), 200);
    const line = s.logs().find((l) => l.includes('sweep: deleted'));
    assert.ok(line, 'the sweeper logged its pass');
  } finally {
    const info = await s.stop();
    assert.equal(info.code, 0, JSON.stringify(info));
  }
});
