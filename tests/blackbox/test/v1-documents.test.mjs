// Native API (/v1, docs/API.md "Native API"): collections and documents — create, get, replace,
// merge, delete, pages, ttl in its three forms, expiry, and the errors of bad input.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, finish, test, sleep, rawHttp } from '../lib/server.mjs';
import {
  v1,
  setupKeys,
  createCollection,
  createDoc,
  uniqueName,
  expect,
  assertV1Error,
  assertNear,
  timeMs,
  listAll,
  UUID_RE,
} from '../lib/v1.mjs';

let server;
let admin;
let coll;

before(async () => {
  server = await startServer({});
  ({ admin } = await setupKeys(server));
  coll = await createCollection(admin, uniqueName('docs'));
});

after(async () => {
  await finish(server);
});

const docs = (c = coll) => `/v1/collections/${c}/documents`;

function assertTs(ts, what = 'ts') {
  assert.ok(Number.isSafeInteger(ts), `${what} is not an integer: ${ts}`);
  // microseconds since the epoch, about now (same machine)
  assert.ok(Math.abs(ts - Date.now() * 1000) < 300e6, `${what} ${ts} is not microseconds of about now`);
}

test('collections: create, get, list (users is built in), 409 on a taken name, delete', async () => {
  const name = uniqueName('coll');
  const t0 = Date.now();
  const created = expect(await admin.post('/v1/collections', { name }), 201);
  assert.deepEqual(Object.keys(created).sort(), ['created_at', 'name']);
  assert.equal(created.name, name);
  assertNear(created.created_at, t0, 60000, 'created_at');

  assertV1Error(await admin.post('/v1/collections', { name }), 409, 'conflict');
  assertV1Error(await admin.post('/v1/collections', { name: 'users' }), 409, 'conflict');

  assert.deepEqual(expect(await admin.get(`/v1/collections/${name}`), 200), created);
  assertV1Error(await admin.get(`/v1/collections/${uniqueName('nope')}`), 404, 'not_found');

  const list = expect(await admin.get('/v1/collections'), 200);
  assert.ok(Array.isArray(list.data), JSON.stringify(list));
  const users = list.data.filter((c) => c.name === 'users');
  assert.equal(users.length, 1, `users listed once: ${JSON.stringify(list)}`);
  assert.equal(users[0].builtin, true);
  assert.ok(list.data.some((c) => c.name === name && c.created_at === created.created_at));
  const names = list.data.map((c) => c.name);
  assert.deepEqual(names, [...names].sort(), 'collections are listed by name, users in its place');

  // The built-in users collection cannot be deleted.
  assertV1Error(await admin.del('/v1/collections/users'), 400, 'invalid_request');

  // Deleting a collection deletes its documents; re-creating it starts empty.
  await createDoc(admin, name, { id: 'd1', data: { a: 1 } });
  const del = await admin.del(`/v1/collections/${name}`);
  expect(del, 204);
  assert.equal(del.text, '', '204 has no body');
  assertV1Error(await admin.get(`/v1/collections/${name}`), 404, 'not_found');
  assertV1Error(await admin.get(`${docs(name)}/d1`), 404, 'not_found');
  assertV1Error(await admin.del(`/v1/collections/${name}`), 404, 'not_found');
  await createCollection(admin, name);
  assertV1Error(await admin.get(`${docs(name)}/d1`), 404, 'not_found');
  assert.deepEqual(expect(await admin.get(docs(name)), 200).data, []);
});

test('collections page by name with size/after, complete and without duplicates', async () => {
  const prefix = uniqueName('pg');
  for (let i = 0; i < 5; i++) await createCollection(admin, `${prefix}_${i}`);
  const { items, pages } = await listAll(admin, '/v1/collections', 2);
  const names = items.map((c) => c.name);
  assert.equal(new Set(names).size, names.length, `duplicates across pages: ${names}`);
  for (let i = 0; i < 5; i++) assert.ok(names.includes(`${prefix}_${i}`), `missing ${prefix}_${i}`);
  assert.ok(names.includes('users'));
  assert.deepEqual(names, [...names].sort(), 'by name across pages, users in its place');
  assert.ok(pages.length >= 3, `pages: ${pages}`);
});

test('documents: create with an id and with a server-assigned UUID, get, 409 on a live id, 404s', async () => {
  const t0 = Date.now();
  const a = expect(await admin.post(docs(), { id: 'alice', data: { email: 'alice@example.com', plan: 'pro' } }), 201);
  assert.deepEqual(Object.keys(a).sort(), ['collection', 'data', 'id', 'ts']);
  assert.equal(a.id, 'alice');
  assert.equal(a.collection, coll);
  assert.deepEqual(a.data, { email: 'alice@example.com', plan: 'pro' });
  assertTs(a.ts);
  assert.ok(a.ts >= (t0 - 5000) * 1000);

  const got = expect(await admin.get(`${docs()}/alice`), 200);
  assert.deepEqual(got, a);

  const b = expect(await admin.post(docs(), { data: { n: 1 } }), 201);
  assert.match(b.id, UUID_RE);
  assert.deepEqual(expect(await admin.get(`${docs()}/${b.id}`), 200), b);

  const c = expect(await admin.post(docs(), { id: 'empty', data: {} }), 201);
  assert.deepEqual(c.data, {});

  assertV1Error(await admin.post(docs(), { id: 'alice', data: { other: true } }), 409, 'conflict');
  assert.deepEqual(expect(await admin.get(`${docs()}/alice`), 200).data, a.data, 'the 409 changed nothing');
  assertV1Error(await admin.get(`${docs()}/nobody`), 404, 'not_found');
  assertV1Error(await admin.post(docs(uniqueName('absent')), { data: {} }), 404, 'not_found');
  assertV1Error(await admin.get(`${docs(uniqueName('absent'))}/alice`), 404, 'not_found');
});

test('PUT replaces data and ttl (absent ttl: no expiry); ts grows with every write; 404 when absent', async () => {
  const d = await createDoc(admin, coll, { id: 'put1', data: { a: 1, b: { c: 2 } }, ttl: 3600 });
  assert.ok(d.ttl, `ttl shown: ${JSON.stringify(d)}`);
  const r1 = expect(await admin.put(`${docs()}/put1`, { data: { x: 'y' } }), 200);
  assert.equal(r1.id, 'put1');
  assert.equal(r1.collection, coll);
  assert.deepEqual(r1.data, { x: 'y' }, 'PUT replaces the whole data');
  assert.equal(r1.ttl, undefined, 'PUT without ttl removes the expiry');
  assert.ok(r1.ts > d.ts, `ts grows: ${d.ts} → ${r1.ts}`);
  assert.deepEqual(expect(await admin.get(`${docs()}/put1`), 200), r1);

  const r2 = expect(await admin.put(`${docs()}/put1`, { data: { x: 'z' }, ttl: '2h' }), 200);
  assertNear(r2.ttl, Date.now() + 2 * 3600e3, 60000, 'ttl');
  assert.ok(r2.ts > r1.ts);

  // Writes in quick succession still get growing ts.
  let last = r2.ts;
  for (let i = 0; i < 5; i++) {
    const r = expect(await admin.put(`${docs()}/put1`, { data: { i } }), 200);
    assert.ok(r.ts > last, `ts ${r.ts} after ${last}`);
    last = r.ts;
  }

  assertV1Error(await admin.put(`${docs()}/never-created`, { data: {} }), 404, 'not_found');
  assertV1Error(await admin.get(`${docs()}/never-created`), 404, 'not_found');
});

test('PATCH merges data recursively (RFC 7386: null deletes, arrays are replaced); ttl replaced or removed', async () => {
  const d = await createDoc(admin, coll, {
    id: 'merge1',
    data: { a: 1, b: { c: 2, d: 3, deep: { x: 1, y: 2 } }, e: 'keep', g: [1, 2] },
  });
  const m1 = expect(
    await admin.patch(`${docs()}/merge1`, { data: { a: null, b: { c: null, f: 4, deep: { y: null, z: 3 } }, g: [3], h: { new: true } } }),
    200,
  );
  assert.deepEqual(m1.data, { b: { d: 3, f: 4, deep: { x: 1, z: 3 } }, e: 'keep', g: [3], h: { new: true } });
  assert.ok(m1.ts > d.ts);
  assert.deepEqual(expect(await admin.get(`${docs()}/merge1`), 200).data, m1.data);

  // A member set to a scalar replaces an object, and the reverse.
  const m2 = expect(await admin.patch(`${docs()}/merge1`, { data: { b: 5, e: { now: 'object' } } }), 200);
  assert.deepEqual(m2.data, { b: 5, e: { now: 'object' }, g: [3], h: { new: true } });

  // ttl alone: data untouched; "ttl": null removes the expiry.
  const m3 = expect(await admin.patch(`${docs()}/merge1`, { ttl: '90m' }), 200);
  assert.deepEqual(m3.data, m2.data);
  assertNear(m3.ttl, Date.now() + 90 * 60e3, 60000, 'ttl');
  const m4 = expect(await admin.patch(`${docs()}/merge1`, { data: { k: 1 } }), 200);
  assert.equal(m4.ttl, m3.ttl, 'a merge without ttl keeps the expiry');
  const m5 = expect(await admin.patch(`${docs()}/merge1`, { ttl: null }), 200);
  assert.equal(m5.ttl, undefined, '"ttl": null removes the expiry');
  assert.deepEqual(m5.data, { ...m2.data, k: 1 });
  assert.ok(m5.ts > m4.ts && m4.ts > m3.ts && m3.ts > m2.ts && m2.ts > m1.ts);

  assertV1Error(await admin.patch(`${docs()}/never-created`, { data: { a: 1 } }), 404, 'not_found');
});

test('concurrent merges of one document never lose each other\'s changes', async () => {
  await createDoc(admin, coll, { id: 'race', data: { base: true } });
  const n = 24;
  const results = await Promise.all(
    Array.from({ length: n }, (_, i) => admin.patch(`${docs()}/race`, { data: { [`k${i}`]: i, nested: { [`n${i}`]: i } } })),
  );
  for (const r of results) expect(r, 200);
  const final = expect(await admin.get(`${docs()}/race`), 200).data;
  const want = { base: true, nested: {} };
  for (let i = 0; i < n; i++) {
    want[`k${i}`] = i;
    want.nested[`n${i}`] = i;
  }
  assert.deepEqual(final, want);
});

test('DELETE removes the document (204, then 404); a re-created id starts fresh', async () => {
  const d = await createDoc(admin, coll, { id: 'gone', data: { v: 1 } });
  const del = await admin.del(`${docs()}/gone`);
  expect(del, 204);
  assert.equal(del.text, '');
  assertV1Error(await admin.get(`${docs()}/gone`), 404, 'not_found');
  assertV1Error(await admin.del(`${docs()}/gone`), 404, 'not_found');
  assertV1Error(await admin.patch(`${docs()}/gone`, { data: { v: 2 } }), 404, 'not_found');
  const again = await createDoc(admin, coll, { id: 'gone', data: { v: 2 } });
  assert.deepEqual(again.data, { v: 2 });
  assert.ok(again.ts > d.ts);
});

test('list: pages of size/after are ordered by id, complete, without duplicates; default size 64; bad sizes 400', async () => {
  const c = await createCollection(admin, uniqueName('list'));
  const ids = Array.from({ length: 23 }, (_, i) => `id-${String((i * 7) % 23).padStart(2, '0')}-${i}`);
  for (const id of ids) await createDoc(admin, c, { id, data: { id } });
  const sorted = [...ids].sort();

  const all = expect(await admin.get(docs(c)), 200);
  assert.deepEqual(all.data.map((d) => d.id), sorted, 'default page holds all 23, by id');
  assert.equal(all.after, undefined, 'no cursor when everything was returned');
  for (const d of all.data) {
    assert.equal(d.collection, c);
    assert.deepEqual(d.data, { id: d.id });
  }

  const { items, pages } = await listAll(admin, docs(c), 5);
  assert.deepEqual(items.map((d) => d.id), sorted);
  assert.deepEqual(pages.slice(0, 4), [5, 5, 5, 5]);

  // Stable while written to: a document created before the cursor during paging does not
  // shift the pages (no duplicate, nothing skipped of what existed).
  const p1 = expect(await admin.get(`${docs(c)}?size=10`), 200);
  assert.equal(p1.data.length, 10);
  assert.equal(typeof p1.after, 'string');
  await createDoc(admin, c, { id: 'aaa-first', data: {} });
  const rest = [];
  let cur = p1.after;
  while (cur !== undefined) {
    const p = expect(await admin.get(`${docs(c)}?size=10&after=${encodeURIComponent(cur)}`), 200);
    rest.push(...p.data.map((d) => d.id));
    cur = p.after;
  }
  assert.deepEqual([...p1.data.map((d) => d.id), ...rest], sorted);

  // size bounds
  expect(await admin.get(`${docs(c)}?size=1000`), 200);
  const one = expect(await admin.get(`${docs(c)}?size=1`), 200);
  assert.equal(one.data.length, 1);
  assert.equal(typeof one.after, 'string');
  for (const bad of ['0', '1001', '-1', 'abc', '']) {
    assertV1Error(await admin.get(`${docs(c)}?size=${bad}`), 400, 'invalid_request');
  }
});

test('default page size is 64', async () => {
  const c = await createCollection(admin, uniqueName('big'));
  await Promise.all(
    Array.from({ length: 70 }, (_, i) => admin.post(docs(c), { id: `d${String(i).padStart(3, '0')}`, data: {} })),
  ).then((rs) => rs.forEach((r) => expect(r, 201)));
  const p = expect(await admin.get(docs(c)), 200);
  assert.equal(p.data.length, 64);
  assert.equal(typeof p.after, 'string');
  const p2 = expect(await admin.get(`${docs(c)}?after=${encodeURIComponent(p.after)}`), 200);
  assert.equal(p2.data.length, 6);
  assert.equal(p2.data[0].id, 'd064');
});

test('ttl as seconds, as a duration and as an RFC 3339 time', async () => {
  const now = Date.now();
  const s = await createDoc(admin, coll, { data: {}, ttl: 3600 });
  assertNear(s.ttl, now + 3600e3, 60000, 'ttl 3600');
  const m = await createDoc(admin, coll, { data: {}, ttl: '90m' });
  assertNear(m.ttl, now + 90 * 60e3, 60000, 'ttl 90m');
  const hm = await createDoc(admin, coll, { data: {}, ttl: '1h30m' });
  assertNear(hm.ttl, now + 90 * 60e3, 60000, 'ttl 1h30m');
  const h = await createDoc(admin, coll, { data: {}, ttl: '720h' });
  assertNear(h.ttl, now + 720 * 3600e3, 60000, 'ttl 720h');
  const abs = await createDoc(admin, coll, { data: {}, ttl: '2099-01-01T00:00:00Z' });
  assert.equal(timeMs(abs.ttl), Date.parse('2099-01-01T00:00:00Z'));
  // Documents have no maximum ttl (that is a token rule).
  const far = await createDoc(admin, coll, { data: {}, ttl: 10 * 365 * 86400 });
  assertNear(far.ttl, now + 10 * 365 * 86400e3, 60000, 'ttl of ten years');
  // And the stored ttl is what GET shows.
  assert.deepEqual(expect(await admin.get(`${docs()}/${abs.id}`), 200), abs);
  // Without ttl: no member.
  const none = await createDoc(admin, coll, { data: {} });
  assert.equal(none.ttl, undefined);
});

test('bad ttl → 400 invalid_request, and nothing is created', async () => {
  const bad = ['30d', '1y', 0, -5, '2001-01-01T00:00:00Z', 'soon', '', true, {}, [], '-1h', 'h'];
  for (const ttl of bad) {
    const id = uniqueName('badttl');
    assertV1Error(await admin.post(docs(), { id, data: {}, ttl }), 400, 'invalid_request');
    assertV1Error(await admin.get(`${docs()}/${id}`), 404, 'not_found');
  }
  await createDoc(admin, coll, { id: 'ttlbase', data: { v: 1 } });
  assertV1Error(await admin.put(`${docs()}/ttlbase`, { data: {}, ttl: '30d' }), 400, 'invalid_request');
  assertV1Error(await admin.patch(`${docs()}/ttlbase`, { ttl: -1 }), 400, 'invalid_request');
  assert.deepEqual(expect(await admin.get(`${docs()}/ttlbase`), 200).data, { v: 1 });
});

test('an expired document reads as 404, leaves lists, can be re-created, cannot be written', async () => {
  const c = await createCollection(admin, uniqueName('exp'));
  const short = await createDoc(admin, c, { id: 'short', data: { v: 1 }, ttl: 1 });
  await createDoc(admin, c, { id: 'stays', data: { v: 2 } });
  const expiry = timeMs(short.ttl);
  assert.ok(expiry > Date.now() - 2000 && expiry <= Date.now() + 1500, `ttl 1 → ${short.ttl}`);
  expect(await admin.get(`${docs(c)}/short`), 200);
  await sleep(Math.max(0, expiry - Date.now()) + 300);
  assertV1Error(await admin.get(`${docs(c)}/short`), 404, 'not_found');
  assert.deepEqual(expect(await admin.get(docs(c)), 200).data.map((d) => d.id), ['stays']);
  assertV1Error(await admin.put(`${docs(c)}/short`, { data: {} }), 404, 'not_found');
  assertV1Error(await admin.patch(`${docs(c)}/short`, { data: { v: 3 } }), 404, 'not_found');
  // The id is free again.
  const again = await createDoc(admin, c, { id: 'short', data: { v: 9 } });
  assert.deepEqual(again.data, { v: 9 });
  assert.equal(again.ttl, undefined);
});

test('bad JSON, unknown or ill-typed members → 400 {"error":{"code":"invalid_request","message"}}', async () => {
  for (const rawBody of ['{"data":', 'not json', '[]', '"x"', '', '{"data":{}} trailing']) {
    assertV1Error(await admin.post(docs(), undefined, { rawBody }), 400, 'invalid_request');
  }
  const badBodies = [
    { data: {}, foo: 1 },
    { data: [1] },
    { data: 'x' },
    { data: null },
    { id: 5, data: {} },
    { id: 'ok', data: {}, credentials: 'pw' },
  ];
  for (const body of badBodies) {
    assertV1Error(await admin.post(docs(), body), 400, 'invalid_request');
  }
  await createDoc(admin, coll, { id: 'typed', data: { v: 1 } });
  assertV1Error(await admin.put(`${docs()}/typed`, { data: {}, extra: true }), 400, 'invalid_request');
  assertV1Error(await admin.put(`${docs()}/typed`, { data: 3 }), 400, 'invalid_request');
  assertV1Error(await admin.put(`${docs()}/typed`, { id: 'typed', data: {} }), 400, 'invalid_request');
  assertV1Error(await admin.patch(`${docs()}/typed`, { data: {}, nope: 1 }), 400, 'invalid_request');
  assertV1Error(await admin.patch(`${docs()}/typed`, { data: 'x' }), 400, 'invalid_request');
  assert.deepEqual(expect(await admin.get(`${docs()}/typed`), 200).data, { v: 1 });
  assertV1Error(await admin.post('/v1/collections', { name: 'x', extra: 1 }), 400, 'invalid_request');
  assertV1Error(await admin.post('/v1/collections', { name: 5 }), 400, 'invalid_request');
  assertV1Error(await admin.post('/v1/collections', {}), 400, 'invalid_request');
});

test('collection names: ^[A-Za-z_][A-Za-z0-9_-]{0,63}$', async () => {
  for (const name of ['_', 'A', `a${'b'.repeat(63)}`, 'x-y_Z9', `_${randomish()}`]) {
    const res = await admin.post('/v1/collections', { name });
    assert.equal(res.status, 201, `${name}: ${res.status} ${res.text}`);
  }
  for (const name of ['', '1abc', '-a', 'a b', 'a.b', 'a/b', `a${'b'.repeat(64)}`, 'é', 'a\u0000b', 'a:b']) {
    assertV1Error(await admin.post('/v1/collections', { name }), 400, 'invalid_request');
  }
  // A bad name in the path is refused too (never a 5xx); an unknown good one is 404.
  for (const seg of ['1abc', 'a%20b', `a${'b'.repeat(64)}`, '%C3%A9']) {
    const res = await admin.get(`/v1/collections/${seg}`);
    assert.ok(res.status === 400 || res.status === 404, `${seg}: ${res.status} ${res.text}`);
    assertV1Error(res, res.status, res.status === 400 ? 'invalid_request' : 'not_found');
  }
});

function randomish() {
  return Math.random().toString(36).slice(2, 10);
}

test('document ids: ^[A-Za-z0-9._-]{1,128}$ except . and ..', async () => {
  const c = await createCollection(admin, uniqueName('ids'));
  for (const id of ['a', '0', 'A.b-c_9', 'x'.repeat(128), '...x', '-']) {
    const res = await admin.post(docs(c), { id, data: { id } });
    assert.equal(res.status, 201, `${id}: ${res.status} ${res.text}`);
    assert.deepEqual(expect(await admin.get(`${docs(c)}/${encodeURIComponent(id)}`), 200).data, { id });
  }
  for (const id of ['', 'a b', 'a/b', 'x'.repeat(129), 'é', 'a\nb', 'a%b', 'a?b', 'a#b']) {
    assertV1Error(await admin.post(docs(c), { id, data: {} }), 400, 'invalid_request');
  }
  // A bad id in the path: 400 or 404, JSON, never 5xx.
  for (const seg of ['a%20b', 'x'.repeat(129), '%C3%A9']) {
    const res = await admin.get(`${docs(c)}/${seg}`);
    assert.ok(res.status === 400 || res.status === 404, `${seg}: ${res.status} ${res.text}`);
    assertV1Error(res, res.status, res.status === 400 ? 'invalid_request' : 'not_found');
  }
  // "." and ".." match the pattern but are refused: URL libraries rewrite them as path steps.
  for (const id of ['.', '..']) {
    assertV1Error(await admin.post(docs(c), { id, data: { dot: id } }), 400, 'invalid_request');
    const r = await rawHttp(server, 'GET', `${docs(c)}/${id}`, { headers: { Authorization: `Bearer ${admin.secret}` } });
    assert.ok(r.status < 500, `GET …/documents/${id}: ${r.status} ${r.text}`);
    assert.notDeepEqual(r.body?.data, { dot: id });
  }
});

test('unknown /v1 paths → 404 not_found; known paths with another method → 405 method_not_allowed', async () => {
  for (const p of ['/v1/nope', '/v1', '/v1/', `${docs()}/x/extra`, '/v1/collections/x/y', '/v1/me/nope', '/v1/keys/x/y']) {
    assertV1Error(await admin.get(p), 404, 'not_found');
  }
  const wrong = [
    ['DELETE', '/v1/collections'],
    ['PUT', '/v1/collections'],
    ['PATCH', `/v1/collections/${coll}`],
    ['PUT', `/v1/collections/${coll}`],
    ['DELETE', docs()],
    ['PUT', docs()],
    ['POST', `${docs()}/x`],
    ['GET', '/v1/login'],
    ['GET', '/v1/identify'],
    ['GET', '/v1/logout'],
    ['PUT', '/v1/tokens'],
    ['PATCH', '/v1/keys'],
    ['POST', '/v1/me'],
    ['PUT', '/v1/credentials'],
  ];
  for (const [m, p] of wrong) {
    assertV1Error(await v1(server, m, p, { as: admin.secret }), 405, 'method_not_allowed');
  }
});

test('/v1 is not served under /auth/v1', async () => {
  const res = await v1(server, 'GET', '/auth/v1/v1/collections', { as: admin.secret });
  assert.equal(res.status, 404, res.text);
});

test('a body over 1 MiB → 413 request_too_large in the /v1 error shape', async () => {
  const big = JSON.stringify({ data: { pad: 'x'.repeat(1024 * 1024 + 10) } });
  const res = await rawHttp(server, 'POST', docs(), {
    headers: {
      Authorization: `Bearer ${admin.secret}`,
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(big),
    },
    body: big,
  });
  assert.equal(res.status, 413, res.text);
  assert.equal(res.body?.error?.code, 'request_too_large', res.text);
  // Just under the limit is read and written.
  const fits = { data: { pad: 'y'.repeat(1000 * 1000) } };
  const ok = expect(await admin.post(docs(), fits), 201);
  assert.equal(expect(await admin.get(`${docs()}/${ok.id}`), 200).data.pad.length, 1000 * 1000);
});
