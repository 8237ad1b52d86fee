// Native API (/v1): indexes — definitions, lookups (values compared as text), unique indexes
// enforced atomically under concurrency, expired documents not holding their terms.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, finish, test, sleep, newUser } from '../lib/server.mjs';
import {
  setupKeys,
  createCollection,
  createDoc,
  uniqueName,
  expect,
  assertV1Error,
  assertNear,
  timeMs,
  listAll,
} from '../lib/v1.mjs';

let server;
let admin;

before(async () => {
  server = await startServer({});
  ({ admin } = await setupKeys(server));
});

after(async () => {
  await finish(server);
});

const docs = (c) => `/v1/collections/${c}/documents`;
const idx = (c, name = '') => `/v1/collections/${c}/indexes${name ? `/${name}` : ''}`;
const lookup = async (c, name, ...terms) => {
  const q = terms.map((t) => `term=${encodeURIComponent(t)}`).join('&');
  return expect(await admin.get(`${idx(c, name)}?${q}`), 200);
};
const ids = (page) => page.data.map((d) => d.id);

test('index definitions: create, get, list, 409 on a taken name, delete', async () => {
  const c = await createCollection(admin);
  const t0 = Date.now();
  const def = expect(await admin.post(idx(c), { name: 'by_email', terms: ['data.email'], unique: true }), 201);
  assert.deepEqual(Object.keys(def).sort(), ['created_at', 'name', 'terms', 'unique']);
  assert.equal(def.name, 'by_email');
  assert.deepEqual(def.terms, ['data.email']);
  assert.equal(def.unique, true);
  assertNear(def.created_at, t0, 60000, 'created_at');
  assert.deepEqual(expect(await admin.get(idx(c, 'by_email')), 200), def);

  const plain = expect(await admin.post(idx(c), { name: 'by_plan', terms: ['data.plan'] }), 201);
  assert.equal(plain.unique, false, 'unique defaults to false');
  assertV1Error(await admin.post(idx(c), { name: 'by_email', terms: ['data.other'] }), 409, 'conflict');

  const list = expect(await admin.get(idx(c)), 200);
  assert.deepEqual(list.data.map((i) => i.name).sort(), ['by_email', 'by_plan']);

  assertV1Error(await admin.get(idx(c, 'nope')), 404, 'not_found');
  assertV1Error(await admin.get(`${idx(c, 'nope')}?term=x`), 404, 'not_found');
  assertV1Error(await admin.get(idx(uniqueName('absent'))), 404, 'not_found');
  assertV1Error(await admin.post(idx(uniqueName('absent')), { name: 'i', terms: ['data.a'] }), 404, 'not_found');

  expect(await admin.del(idx(c, 'by_plan')), 204);
  assertV1Error(await admin.get(idx(c, 'by_plan')), 404, 'not_found');
  assertV1Error(await admin.del(idx(c, 'by_plan')), 404, 'not_found');
  assert.deepEqual(expect(await admin.get(idx(c)), 200).data.map((i) => i.name), ['by_email']);

  // Deleting the collection deletes its indexes.
  expect(await admin.del(`/v1/collections/${c}`), 204);
  await createCollection(admin, c);
  assert.deepEqual(expect(await admin.get(idx(c)), 200).data, []);
});

test('the users collection has the built-in users_by_email index', async () => {
  const list = expect(await admin.get(idx('users')), 200);
  const byEmail = list.data.find((i) => i.name === 'users_by_email');
  assert.ok(byEmail, JSON.stringify(list));
  assert.equal(expect(await admin.get(idx('users', 'users_by_email')), 200).name, 'users_by_email');
  const u = await newUser(server, { prefix: 'idx' });
  const page = await lookup('users', 'users_by_email', u.email);
  assert.deepEqual(ids(page), [u.user.id]);
  assert.equal(page.data[0].collection, 'users');
  assert.equal(page.data[0].data.email, u.email);
});

test('bad index definitions → 400 invalid_request', async () => {
  const c = await createCollection(admin);
  const nine = Array.from({ length: 9 }, (_, i) => `data.t${i}`);
  const bad = [
    { name: 'i', terms: [] },
    { name: 'i', terms: nine },
    { name: 'i', terms: ['email'] },
    { name: 'i', terms: ['data.'] },
    { name: 'i', terms: ['data'] },
    { name: 'i', terms: ['data..a'] },
    { name: 'i', terms: ['ts'] },
    { name: 'i', terms: [5] },
    { name: 'i', terms: 'data.email' },
    { name: 'i' },
    { terms: ['data.a'] },
    { name: '1i', terms: ['data.a'] },
    { name: 'i i', terms: ['data.a'] },
    { name: `i${'x'.repeat(64)}`, terms: ['data.a'] },
    { name: 'i', terms: ['data.a'], unique: 'yes' },
    { name: 'i', terms: ['data.a'], extra: 1 },
  ];
  for (const body of bad) assertV1Error(await admin.post(idx(c), body), 400, 'invalid_request');
  assert.deepEqual(expect(await admin.get(idx(c)), 200).data, [], 'nothing was created');
  // Eight terms and nested paths are fine.
  const eight = Array.from({ length: 8 }, (_, i) => `data.t${i}.deep`);
  expect(await admin.post(idx(c), { name: 'eight', terms: eight }), 201);
});

test('lookups: a page of live documents by id; several terms in order; nested paths; pages', async () => {
  const c = await createCollection(admin);
  expect(await admin.post(idx(c), { name: 'by_plan', terms: ['data.plan'] }), 201);
  expect(await admin.post(idx(c), { name: 'by_org_role', terms: ['data.org', 'data.role'] }), 201);
  expect(await admin.post(idx(c), { name: 'by_city', terms: ['data.address.city'] }), 201);
  const pro = [];
  for (let i = 0; i < 7; i++) {
    const id = `pro${i}`;
    pro.push(id);
    await createDoc(admin, c, { id, data: { plan: 'pro', org: i % 2 ? 'acme' : 'init', role: i < 3 ? 'admin' : 'user', address: { city: i === 0 ? 'Paris' : 'Lyon' } } });
  }
  await createDoc(admin, c, { id: 'free0', data: { plan: 'free', org: 'acme', role: 'admin' } });

  const p = await lookup(c, 'by_plan', 'pro');
  assert.deepEqual(ids(p), pro);
  for (const d of p.data) {
    assert.equal(d.collection, c);
    assert.equal(d.data.plan, 'pro');
    assert.equal(typeof d.ts, 'number');
  }
  assert.deepEqual(ids(await lookup(c, 'by_plan', 'free')), ['free0']);
  assert.deepEqual(ids(await lookup(c, 'by_plan', 'none')), []);
  assert.deepEqual(ids(await lookup(c, 'by_org_role', 'acme', 'admin')), ['free0', 'pro1']);
  assert.deepEqual(ids(await lookup(c, 'by_org_role', 'admin', 'acme')), [], 'terms are matched in order');
  assert.deepEqual(ids(await lookup(c, 'by_city', 'Paris')), ['pro0']);

  const { items } = await listAll(admin, `${idx(c, 'by_plan')}?term=pro`, 3);
  assert.deepEqual(items.map((d) => d.id), pro);

  // The wrong number of terms is a bad request.
  assertV1Error(await admin.get(`${idx(c, 'by_org_role')}?term=acme`), 400, 'invalid_request');
  assertV1Error(await admin.get(`${idx(c, 'by_plan')}?term=a&term=b`), 400, 'invalid_request');

  // Writes move documents between terms.
  expect(await admin.patch(`${docs(c)}/pro0`, { data: { plan: 'free' } }), 200);
  expect(await admin.put(`${docs(c)}/pro1`, { data: { plan: 'gold' } }), 200);
  expect(await admin.del(`${docs(c)}/pro2`), 204);
  assert.deepEqual(ids(await lookup(c, 'by_plan', 'pro')), ['pro3', 'pro4', 'pro5', 'pro6']);
  assert.deepEqual(ids(await lookup(c, 'by_plan', 'free')), ['free0', 'pro0']);
  assert.deepEqual(ids(await lookup(c, 'by_plan', 'gold')), ['pro1']);
  assert.deepEqual(ids(await lookup(c, 'by_org_role', 'acme', 'admin')), ['free0'], 'pro1 lost its org by the PUT');
});

test('values are compared as text: 5 finds 5 and "5"; true finds booleans; null, objects, arrays and missing are not indexed', async () => {
  const c = await createCollection(admin);
  // Documents created before the index are indexed when it is created.
  const cases = {
    num5: 5,
    str5: '5',
    arr5: [5],
    obj5: { v: 5 },
    nul: null,
    strnull: 'null',
    yes: true,
    no: false,
    float: 2.5,
    big: 1e3,
  };
  for (const [id, n] of Object.entries(cases)) await createDoc(admin, c, { id, data: { n } });
  await createDoc(admin, c, { id: 'missing', data: { other: 5 } });
  expect(await admin.post(idx(c), { name: 'by_n', terms: ['data.n'] }), 201);

  assert.deepEqual(ids(await lookup(c, 'by_n', '5')), ['num5', 'str5']);
  assert.deepEqual(ids(await lookup(c, 'by_n', 'null')), ['strnull']);
  assert.deepEqual(ids(await lookup(c, 'by_n', 'true')), ['yes']);
  assert.deepEqual(ids(await lookup(c, 'by_n', 'false')), ['no']);
  assert.deepEqual(ids(await lookup(c, 'by_n', '2.5')), ['float']);
  assert.deepEqual(ids(await lookup(c, 'by_n', '1000')), ['big'], 'integers without a fraction');
  assert.deepEqual(ids(await lookup(c, 'by_n', '[5]')), []);
  assert.deepEqual(ids(await lookup(c, 'by_n', '{"v":5}')), []);
  // Documents written after the index are indexed the same way.
  await createDoc(admin, c, { id: 'later5', data: { n: 5 } });
  assert.deepEqual(ids(await lookup(c, 'by_n', '5')), ['later5', 'num5', 'str5']);
});

test('a unique index refuses a taken term on create, replace and merge (409), and frees terms on change', async () => {
  const c = await createCollection(admin);
  expect(await admin.post(idx(c), { name: 'by_email', terms: ['data.email'], unique: true }), 201);
  await createDoc(admin, c, { id: 'a', data: { email: 'a@example.com' } });
  await createDoc(admin, c, { id: 'b', data: { email: 'b@example.com' } });
  assertV1Error(await admin.post(docs(c), { id: 'c', data: { email: 'a@example.com' } }), 409, 'conflict');
  assertV1Error(await admin.get(`${docs(c)}/c`), 404, 'not_found');
  assertV1Error(await admin.put(`${docs(c)}/b`, { data: { email: 'a@example.com' } }), 409, 'conflict');
  assertV1Error(await admin.patch(`${docs(c)}/b`, { data: { email: 'a@example.com' } }), 409, 'conflict');
  assert.equal(expect(await admin.get(`${docs(c)}/b`), 200).data.email, 'b@example.com', 'the 409s changed nothing');
  // Rewriting a document with its own term is fine.
  expect(await admin.put(`${docs(c)}/a`, { data: { email: 'a@example.com', x: 1 } }), 200);
  // A changed term frees the old one.
  expect(await admin.patch(`${docs(c)}/a`, { data: { email: 'a2@example.com' } }), 200);
  expect(await admin.patch(`${docs(c)}/b`, { data: { email: 'a@example.com' } }), 200);
  // A deleted document frees its term.
  expect(await admin.del(`${docs(c)}/b`), 204);
  await createDoc(admin, c, { id: 'c', data: { email: 'a@example.com' } });
  // Documents without the term are not constrained.
  await createDoc(admin, c, { id: 'n1', data: {} });
  await createDoc(admin, c, { id: 'n2', data: { email: null } });
  // Text comparison holds for uniqueness too: 5 and "5" collide.
  expect(await admin.post(idx(c), { name: 'by_num', terms: ['data.num'], unique: true }), 201);
  await createDoc(admin, c, { id: 'num', data: { num: 5 } });
  assertV1Error(await admin.post(docs(c), { id: 'str', data: { num: '5' } }), 409, 'conflict');
  // A unique index over existing duplicates is refused and not created.
  expect(await admin.post(docs(c), { id: 'dup1', data: { team: 'x' } }), 201);
  expect(await admin.post(docs(c), { id: 'dup2', data: { team: 'x' } }), 201);
  assertV1Error(await admin.post(idx(c), { name: 'by_team', terms: ['data.team'], unique: true }), 409, 'conflict');
  assertV1Error(await admin.get(idx(c, 'by_team')), 404, 'not_found');
  expect(await admin.post(idx(c), { name: 'by_team', terms: ['data.team'] }), 201);
  // After the unique index is deleted, the term is no longer enforced.
  expect(await admin.del(idx(c, 'by_email')), 204);
  await createDoc(admin, c, { id: 'd', data: { email: 'a@example.com' } });
});

test('50 concurrent creates of one unique term: exactly one 201, the others 409', async () => {
  const c = await createCollection(admin);
  expect(await admin.post(idx(c), { name: 'by_email', terms: ['data.email'], unique: true }), 201);
  const email = `${uniqueName('race')}@example.com`;
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) => admin.post(docs(c), { id: `r${i}`, data: { email, i } })),
  );
  const statuses = results.map((r) => r.status);
  assert.equal(statuses.filter((s) => s === 201).length, 1, `statuses: ${statuses}`);
  assert.equal(statuses.filter((s) => s === 409).length, 49, `statuses: ${statuses}`);
  for (const r of results.filter((x) => x.status === 409)) assertV1Error(r, 409, 'conflict');
  const winner = results.find((r) => r.status === 201).body.id;
  assert.deepEqual(ids(await lookup(c, 'by_email', email)), [winner]);
  assert.deepEqual(expect(await admin.get(docs(c)), 200).data.map((d) => d.id), [winner]);

  // The same with concurrent merges moving different documents onto one term.
  for (let i = 0; i < 20; i++) await createDoc(admin, c, { id: `m${i}`, data: { email: `m${i}@example.com` } });
  const target = `${uniqueName('merge')}@example.com`;
  const merges = await Promise.all(
    Array.from({ length: 20 }, (_, i) => admin.patch(`${docs(c)}/m${i}`, { data: { email: target } })),
  );
  const ms = merges.map((r) => r.status);
  assert.equal(ms.filter((s) => s === 200).length, 1, `statuses: ${ms}`);
  assert.equal(ms.filter((s) => s === 409).length, 19, `statuses: ${ms}`);
  assert.equal(ids(await lookup(c, 'by_email', target)).length, 1);
});

test('an expired document does not hold its terms, nor appear in lookups', async () => {
  const c = await createCollection(admin);
  expect(await admin.post(idx(c), { name: 'by_email', terms: ['data.email'], unique: true }), 201);
  const short = await createDoc(admin, c, { id: 'short', data: { email: 'x@example.com' }, ttl: 1 });
  assertV1Error(await admin.post(docs(c), { id: 'other', data: { email: 'x@example.com' } }), 409, 'conflict');
  assert.deepEqual(ids(await lookup(c, 'by_email', 'x@example.com')), ['short']);
  await sleep(Math.max(0, timeMs(short.ttl) - Date.now()) + 300);
  assert.deepEqual(ids(await lookup(c, 'by_email', 'x@example.com')), []);
  await createDoc(admin, c, { id: 'other', data: { email: 'x@example.com' } });
  assert.deepEqual(ids(await lookup(c, 'by_email', 'x@example.com')), ['other']);
});
