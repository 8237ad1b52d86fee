// Authorization on /v1 (docs/AUTHORIZATION.md): roles and profiles CRUD and validation, an
// owner-only collection (reads, writes with old/new, creates, deletes, filtered listing),
// Kuzzle's role format and its shadowing rule, membership predicates, AccessProvider claims
// mapped to a defined role, /v1/me/rights, /v1/authz/check (single and batch, another
// subject), a role change taking effect without a new login, and profile escalation refused.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, finish, test } from '../lib/server.mjs';
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
  login,
  listAll,
} from '../lib/v1.mjs';
import { makeKey, startJwksServer, sign, now } from '../lib/idp.mjs';

let server;
let keys;
let admin;
let people; // identities
let posts; // owner-only documents
const PW = 'correct horse battery';
const AUD = 'https://tessera.blackbox.test';

before(async () => {
  server = await startServer({ API_EXTERNAL_URL: AUD });
  keys = await setupKeys(server);
  admin = keys.admin;
  people = await createCollection(admin, uniqueName('people'));
  posts = await createCollection(admin, uniqueName('posts'));
});

after(async () => {
  await finish(server);
});

const docs = (c) => `/v1/collections/${c}/documents`;

/** An identity of `people` with a password and profiles; returns {id, secret, as}. */
async function person(profiles, data = {}) {
  const id = uniqueName('p');
  const body = { id, data: { ...data }, credentials: { password: PW } };
  if (profiles) body.data.profiles = profiles;
  await createDoc(admin, people, body);
  const token = await login(server, { collection: people, id, password: PW });
  return { id, secret: token.secret, as: caller(server, token.secret) };
}

async function role(body) {
  return expect(await admin.post('/v1/roles', body), 201);
}

async function profile(body) {
  return expect(await admin.post('/v1/profiles', body), 201);
}

const OWNER = 'resource.data.owner == identity.id';

/** An owner-only role on posts, and a profile holding it. Returns the profile's name. */
async function ownerProfile(extraActions = {}) {
  const r = uniqueName('owner');
  await role({
    name: r,
    privileges: [
      {
        resource: `collections/${posts}`,
        actions: {
          read: OWNER,
          create: 'new.data.owner == identity.id',
          write: 'old.data.owner == identity.id && new.data.owner == old.data.owner',
          delete: OWNER,
          list: true,
          ...extraActions,
        },
      },
    ],
  });
  const p = uniqueName('writers');
  await profile({ name: p, policies: [{ role: r }] });
  return { role: r, profile: p };
}

test('defaults: admin, default and anonymous roles and profiles exist and cannot be deleted', async () => {
  const roles = expect(await admin.get('/v1/roles'), 200).data.map((r) => r.name);
  for (const n of ['admin', 'default', 'anonymous']) assert.ok(roles.includes(n), `role ${n} in ${roles}`);
  const profiles = expect(await admin.get('/v1/profiles'), 200).data.map((r) => r.name);
  for (const n of ['admin', 'default', 'anonymous']) assert.ok(profiles.includes(n), `profile ${n} in ${profiles}`);
  for (const n of ['admin', 'default', 'anonymous']) {
    assertV1Error(await admin.del(`/v1/roles/${n}`), 400, 'invalid_request');
    assertV1Error(await admin.del(`/v1/profiles/${n}`), 400, 'invalid_request');
  }
  const anon = expect(await admin.get('/v1/roles/anonymous'), 200);
  assert.equal(anon.privileges[0].resource, 'api/auth');
  assert.equal(anon.privileges[0].actions.login, true);
});

test('roles CRUD: create 201 (canonical form), get, replace, delete; 409 duplicate; 404 missing; only admin writes, server-readonly reads', async () => {
  const name = uniqueName('r');
  const created = await role({ name, privileges: [{ resource: 'api/blog', actions: { publish: true } }], data: { note: 'x' } });
  assert.equal(created.name, name);
  assert.deepEqual(created.membership, []);
  assert.deepEqual(created.data, { note: 'x' });
  assert.ok(created.created_at && created.updated_at);
  assertV1Error(await admin.post('/v1/roles', { name, privileges: [] }), 409, 'conflict');
  assert.equal(expect(await keys.readonly.get(`/v1/roles/${name}`), 200).name, name);
  assertForbidden(await keys.readonly.post('/v1/roles', { name: uniqueName('r'), privileges: [] }));
  assertForbidden(await keys.server.del(`/v1/roles/${name}`));
  assertUnauthorized(await v1(server, 'GET', '/v1/roles'));
  const replaced = expect(await admin.put(`/v1/roles/${name}`, { privileges: [{ resource: 'api/blog', actions: { publish: false } }] }), 200);
  assert.equal(replaced.privileges[0].actions.publish, false);
  assert.equal(replaced.created_at, created.created_at);
  assertV1Error(await admin.put(`/v1/roles/${name}`, { name: 'other', privileges: [] }), 400, 'invalid_request');
  expect(await admin.del(`/v1/roles/${name}`), 204);
  assertV1Error(await admin.get(`/v1/roles/${name}`), 404, 'not_found');
  assertV1Error(await admin.put(`/v1/roles/${name}`, { privileges: [] }), 404, 'not_found');
  assertV1Error(await admin.del(`/v1/roles/${name}`), 404, 'not_found');
});

test('role validation: 400 with the member and, for predicates, line and column; built-in key role names refused', async () => {
  const bad = {
    'bad resource': { privileges: [{ resource: 'tables/x', actions: { read: true } }] },
    'collection action': { privileges: [{ resource: 'collections/x', actions: { fly: true } }] },
    'value type': { privileges: [{ resource: 'api/x', actions: { y: 3 } }] },
    'duplicate resource': { privileges: [{ resource: 'api/x', actions: { y: true } }, { resource: 'api/x', actions: { z: true } }] },
    'unknown member': { privileges: [], colour: 'red' },
    'no privileges': {},
    'membership shape': { privileges: [], membership: [{ predicate: 'true' }] },
    'Kuzzle values': { controllers: { document: { read: true } } },
  };
  for (const [what, body] of Object.entries(bad)) {
    const res = await admin.post('/v1/roles', { name: uniqueName('bad'), ...body });
    assert.equal(res.status, 400, `${what}: ${res.status} ${res.text}`);
    assertV1Error(res, 400, 'invalid_request');
  }
  const syntax = await admin.post('/v1/roles', {
    name: uniqueName('bad'),
    privileges: [{ resource: 'collections/x', actions: { read: 'resource.data.owner ==\n identity.id &&' } }],
  });
  assertV1Error(syntax, 400, 'invalid_request');
  assert.match(syntax.body.error.message, /privileges\[0\]\.actions\.read: line 2, column \d+/);
  const type = await admin.post('/v1/roles', {
    name: uniqueName('bad'),
    privileges: [{ resource: 'collections/x', actions: { read: '"a" < 3' } }],
  });
  assertV1Error(type, 400, 'invalid_request');
  assert.match(type.body.error.message, /line 1, column \d+/);
  for (const n of ['server', 'server-readonly', 'client']) {
    assertV1Error(await admin.post('/v1/roles', { name: n, privileges: [] }), 400, 'invalid_request');
  }
});

test('profiles CRUD: roles must exist; a role in use cannot be deleted (409); Kuzzle roleId/rateLimit accepted', async () => {
  const r = uniqueName('r');
  await role({ name: r, privileges: [{ resource: 'api/blog', actions: { read: true } }] });
  const name = uniqueName('prof');
  assertV1Error(await admin.post('/v1/profiles', { name, policies: [{ role: 'no_such_role' }] }), 400, 'invalid_request');
  const created = await profile({ name, policies: [{ roleId: r, restrictedTo: [{ collections: [posts] }] }], rateLimit: 10 });
  assert.deepEqual(created.policies, [{ role: r, restrictedTo: [{ collections: [posts] }] }]);
  assert.equal(created.rate_limit, 10);
  assertV1Error(await admin.del(`/v1/roles/${r}`), 409, 'conflict');
  expect(await admin.put(`/v1/profiles/${name}`, { policies: [{ role: 'default' }] }), 200);
  expect(await admin.del(`/v1/roles/${r}`), 204);
  expect(await admin.del(`/v1/profiles/${name}`), 204);
  assertV1Error(await admin.get(`/v1/profiles/${name}`), 404, 'not_found');
  for (const body of [{ policies: [] }, { policies: [{ role: r, role2: 1 }] }, { policies: [{ role: 'default' }], rate_limit: -1 }]) {
    assertV1Error(await admin.post('/v1/profiles', { name: uniqueName('p'), ...body }), 400, 'invalid_request');
  }
});

test('owner-only collection: owners create, read, write and delete their documents; others get 403; listing filters', async () => {
  const { profile: p } = await ownerProfile();
  const ada = await person([p]);
  const bob = await person([p]);
  const mine = expect(await ada.as.post(docs(posts), { id: uniqueName('post'), data: { owner: ada.id, title: 'a' } }), 201);
  // creating a document owned by someone else: refused
  assertForbidden(await ada.as.post(docs(posts), { data: { owner: bob.id, title: 'forged' } }));
  const bobs = expect(await bob.as.post(docs(posts), { data: { owner: bob.id, title: 'b' } }), 201);
  // read
  assert.equal(expect(await ada.as.get(`${docs(posts)}/${mine.id}`), 200).data.title, 'a');
  assertForbidden(await bob.as.get(`${docs(posts)}/${mine.id}`));
  // write: old and new are both checked; the owner cannot give the document away
  assert.equal(expect(await ada.as.patch(`${docs(posts)}/${mine.id}`, { data: { title: 'a2' } }), 200).data.title, 'a2');
  assertForbidden(await ada.as.patch(`${docs(posts)}/${mine.id}`, { data: { owner: bob.id } }));
  assertForbidden(await bob.as.put(`${docs(posts)}/${mine.id}`, { data: { owner: bob.id, title: 'stolen' } }));
  assert.equal(expect(await ada.as.put(`${docs(posts)}/${mine.id}`, { data: { owner: ada.id, title: 'a3' } }), 200).data.title, 'a3');
  // listing returns only what the caller may read (the server key sees everything)
  const seenByAda = (await listAll(ada.as, docs(posts), 1)).items.map((d) => d.id);
  assert.ok(seenByAda.includes(mine.id), 'ada lists her post');
  assert.ok(!seenByAda.includes(bobs.id), 'ada does not list bob\'s post');
  const seenByServer = (await listAll(keys.server, docs(posts), 100)).items.map((d) => d.id);
  assert.ok(seenByServer.includes(mine.id) && seenByServer.includes(bobs.id));
  // delete
  assertForbidden(await bob.as.del(`${docs(posts)}/${mine.id}`));
  expect(await ada.as.del(`${docs(posts)}/${mine.id}`), 204);
  // an identity without the profile (default profile only) has no right on posts at all
  const eve = await person(null);
  assertForbidden(await eve.as.get(`${docs(posts)}/${bobs.id}`));
  assertForbidden(await eve.as.get(docs(posts)));
  assertForbidden(await eve.as.post(docs(posts), { data: { owner: eve.id } }));
  // anonymous: 401
  assertUnauthorized(await v1(server, 'GET', `${docs(posts)}/${bobs.id}`));
});

test('a role change applies on the next request, without a new login', async () => {
  const { role: r, profile: p } = await ownerProfile();
  const ada = await person([p]);
  const d = expect(await ada.as.post(docs(posts), { data: { owner: ada.id } }), 201);
  expect(await ada.as.get(`${docs(posts)}/${d.id}`), 200);
  const current = expect(await admin.get(`/v1/roles/${r}`), 200);
  current.privileges[0].actions.read = false;
  delete current.created_at;
  delete current.updated_at;
  expect(await admin.put(`/v1/roles/${r}`, current), 200);
  assertForbidden(await ada.as.get(`${docs(posts)}/${d.id}`));
  current.privileges[0].actions.read = true;
  expect(await admin.put(`/v1/roles/${r}`, current), 200);
  expect(await ada.as.get(`${docs(posts)}/${d.id}`), 200);
  // profiles too: removing the profile from the identity's document takes the rights away
  expect(await admin.patch(`${docs(people)}/${ada.id}`, { data: { profiles: null } }), 200);
  assertForbidden(await ada.as.get(`${docs(posts)}/${d.id}`));
});

test('an identity cannot give itself profiles: changing data.profiles needs profile:assign', async () => {
  const self = uniqueName('selfedit');
  await role({ name: self, privileges: [{ resource: `collections/${people}`, actions: { write: 'resource.id == identity.id', read: 'resource.id == identity.id' } }] });
  const p = uniqueName('prof');
  await profile({ name: p, policies: [{ role: self }] });
  const ada = await person([p], { nick: 'a' });
  expect(await ada.as.patch(`${docs(people)}/${ada.id}`, { data: { nick: 'b' } }), 200);
  assertForbidden(await ada.as.patch(`${docs(people)}/${ada.id}`, { data: { profiles: [p, 'admin'] } }));
  assert.deepEqual(expect(await admin.get(`${docs(people)}/${ada.id}`), 200).data.profiles, [p]);
  // nor set a password through the role, skipping current_password (its own, or anyone's)
  assertForbidden(await ada.as.patch(`${docs(people)}/${ada.id}`, { data: {}, credentials: { password: 'brand-new-pass' } }));
  assertForbidden(await ada.as.put(`${docs(people)}/${ada.id}`, { data: { nick: 'c', profiles: [p] }, credentials: { password: 'brand-new-pass' } }));
  const res = await ada.as.patch(`${docs(people)}/${ada.id}`, { credentials: { password: 'brand-new-pass' } });
  assertV1Error(res, 400, 'invalid_credentials');
  expect(await v1(server, 'POST', '/v1/login', { body: { collection: people, id: ada.id, password: PW } }), 200);
});

test('an identity cannot raise itself through a membership predicate, nor delete through ttl', async () => {
  const staff = await createCollection(admin, uniqueName('crew'));
  const mod = uniqueName('mod');
  await role({
    name: mod,
    privileges: [{ resource: `collections/${posts}`, actions: { '*': true } }],
    membership: [{ collection: staff, predicate: '"moderator" in identity.data.badges' }],
  });
  const self = uniqueName('selfedit');
  await role({ name: self, privileges: [{ resource: `collections/${staff}`, actions: { write: 'old.id == identity.id', delete: false } }] });
  const p = uniqueName('crewp');
  await profile({ name: p, policies: [{ role: self }] });
  const id = uniqueName('sam');
  await createDoc(admin, staff, { id, data: { badges: [], profiles: [p] }, credentials: { password: PW } });
  const sam = caller(server, (await login(server, { collection: staff, id, password: PW })).secret);
  // an edit that changes nothing a membership reads: fine
  expect(await sam.patch(`${docs(staff)}/${id}`, { data: { nick: 'sam' } }), 200);
  // giving itself the badge the moderator role's membership reads: refused
  assertForbidden(await sam.patch(`${docs(staff)}/${id}`, { data: { badges: ['moderator'] } }));
  assert.deepEqual(expect(await admin.get(`${docs(staff)}/${id}`), 200).data.badges, []);
  // a server may (profile:assign)
  expect(await keys.server.patch(`${docs(staff)}/${id}`, { data: { badges: ['moderator'] } }), 200);
  const post = expect(await keys.server.post(docs(posts), { data: { owner: 'x' } }), 201);
  expect(await sam.get(`${docs(posts)}/${post.id}`), 200);
  // write without delete: setting a ttl (which deletes later) is refused; removing one is a write
  assertForbidden(await sam.patch(`${docs(staff)}/${id}`, { ttl: 1 }));
  expect(await sam.patch(`${docs(staff)}/${id}`, { ttl: null }), 200);
});

test('the predicate language never lets absent data match: `in` with a missing value denies', async () => {
  const r = uniqueName('delegates');
  await role({ name: r, privileges: [{ resource: `collections/${posts}`, actions: { read: 'resource.data.owner in [identity.id, identity.data.delegate_of]', list: true } }] });
  const p = uniqueName('dp');
  await profile({ name: p, policies: [{ role: r }] });
  const eve = await person([p]);
  const ownerless = expect(await keys.server.post(docs(posts), { data: { title: 'no owner' } }), 201);
  assertForbidden(await eve.as.get(`${docs(posts)}/${ownerless.id}`));
  const mine = expect(await keys.server.post(docs(posts), { data: { owner: eve.id } }), 201);
  expect(await eve.as.get(`${docs(posts)}/${mine.id}`), 200);
  // an identity may not replace its verified claims in a check
  assertV1Error(await eve.as.post('/v1/authz/check', { action: 'read', resource: `collections/${posts}`, context: { claims: { aal: 'aal2' } } }), 400, 'invalid_request');
});

test('Kuzzle role format: controllers converted to api/<controller>; an explicit entry shadows "*" inside one role', async () => {
  const r = uniqueName('kz');
  const created = await role({
    name: r,
    controllers: {
      '*': { actions: { '*': true } },
      token: { actions: { list: true } },
    },
  });
  assert.deepEqual(
    created.privileges.map((p) => p.resource).sort(),
    ['api/*', 'api/token'],
  );
  const p = uniqueName('kzp');
  await profile({ name: p, policies: [{ role: r }] });
  const ada = await person([p]);
  const check = async (resource, action) =>
    expect(await ada.as.post('/v1/authz/check', { resource, action }), 200).allowed;
  assert.equal(await check('api/token', 'list'), true);
  assert.equal(await check('api/token', 'create'), false, 'token:create is shadowed by the explicit token entry');
  assert.equal(await check('api/collection', 'list'), true, '"*" still applies to other controllers');
  // ...but never to the actions that administer authorization: they must be named
  assert.equal(await check('api/key', 'create'), false, 'key:create is protected from api/*');
  assert.equal(await check('api/role', 'update'), false, 'role:update is protected from api/*');
  assertForbidden(await ada.as.post('/v1/keys', { role: 'admin' }));
  // enforced on the real endpoints too
  expect(await ada.as.get('/v1/tokens'), 200);
  assertForbidden(await ada.as.post('/v1/tokens', { identity: { collection: people, id: ada.id } }));
});

test('protected actions: a role grants key:create, token:create, role and profile writes only by naming the controller', async () => {
  const r = uniqueName('keymaker');
  await role({ name: r, privileges: [{ resource: 'api/key', actions: { create: true, list: true } }] });
  const p = uniqueName('kmp');
  await profile({ name: p, policies: [{ role: r }] });
  const ada = await person([p]);
  // named: allowed (and as good as admin: such roles are for administrators only)
  expect(await ada.as.post('/v1/keys', { role: 'server-readonly' }), 201);
  // the wildcard never reaches them
  const w = uniqueName('wild');
  await role({ name: w, privileges: [{ resource: 'api/*', actions: { '*': true } }] });
  const wp = uniqueName('wp');
  await profile({ name: wp, policies: [{ role: w }] });
  const bob = await person([wp]);
  assertForbidden(await bob.as.post('/v1/keys', { role: 'admin' }));
  assertForbidden(await bob.as.post('/v1/tokens', { identity: { collection: people, id: ada.id } }));
  assertForbidden(await bob.as.put(`/v1/roles/${w}`, { privileges: [] }));
  assertForbidden(await bob.as.post('/v1/profiles', { name: uniqueName('x'), policies: [{ role: 'admin' }] }));
  expect(await bob.as.get('/v1/keys'), 200); // not protected: listing keys shows no secret
  const rights = expect(await bob.as.get('/v1/me/rights'), 200).rights;
  assert.equal(rights.find((x) => x.resource === 'api/key' && x.action === 'create').value, 'denied');
  assert.equal(rights.find((x) => x.resource === 'api/key' && x.action === 'list').value, 'allowed');
});

test('membership: a role granted to identities of a collection whose document satisfies a predicate', async () => {
  const staff = await createCollection(admin, uniqueName('staff'));
  const r = uniqueName('senior');
  await role({
    name: r,
    privileges: [{ resource: 'api/reports', actions: { view: true } }],
    membership: [{ collection: staff, predicate: 'identity.data.level >= 3' }],
  });
  const mk = async (level) => {
    const id = uniqueName('s');
    await createDoc(admin, staff, { id, data: { level }, credentials: { password: PW } });
    return caller(server, (await login(server, { collection: staff, id, password: PW })).secret);
  };
  const senior = await mk(5);
  const junior = await mk(1);
  const s = expect(await senior.post('/v1/authz/check', { resource: 'api/reports', action: 'view' }), 200);
  assert.equal(s.allowed, true);
  assert.equal(s.explain.role, r);
  assert.equal(s.explain.via, 'membership');
  assert.equal(expect(await junior.post('/v1/authz/check', { resource: 'api/reports', action: 'view' }), 200).allowed, false);
});

test('/v1/authz/check: explain names the role, privilege and rule; context resource for services; batch; another subject needs a server key', async () => {
  const { role: r, profile: p } = await ownerProfile();
  const ada = await person([p]);
  const yes = expect(await ada.as.post('/v1/authz/check', {
    action: 'read',
    resource: `collections/${posts}`,
    context: { resource: { data: { owner: ada.id } } },
  }), 200);
  assert.deepEqual(yes, {
    allowed: true,
    explain: { role: r, privilege: `collections/${posts}`, action: 'read', rule: OWNER, via: p },
  });
  const no = expect(await ada.as.post('/v1/authz/check', {
    action: 'read',
    resource: `collections/${posts}`,
    context: { resource: { data: { owner: 'someone-else' } } },
  }), 200);
  assert.equal(no.allowed, false);
  assert.equal(no.explain.role, null);
  assert.equal(typeof no.explain.reason, 'string');
  // a stored document named by id is read for the decision
  const d = expect(await ada.as.post(docs(posts), { data: { owner: ada.id } }), 201);
  assert.equal(expect(await ada.as.post('/v1/authz/check', { action: 'delete', resource: `collections/${posts}/${d.id}` }), 200).allowed, true);
  // a write named by id sees the stored document as old, as on /v1 itself
  const w = await ada.as.post('/v1/authz/check', { action: 'write', resource: `collections/${posts}/${d.id}`, context: { new: { data: { owner: ada.id } } } });
  assert.equal(expect(w, 200).allowed, true);
  const steal = await ada.as.post('/v1/authz/check', { action: 'write', resource: `collections/${posts}/${d.id}`, context: { new: { data: { owner: 'x' } } } });
  assert.equal(expect(steal, 200).allowed, false);
  // batch
  const batch = expect(await ada.as.post('/v1/authz/check', {
    checks: [
      { action: 'list', resource: `collections/${posts}` },
      { action: 'create', resource: 'api/key' },
      { action: 'login', resource: 'api/auth' },
    ],
  }), 200);
  assert.deepEqual(batch.results.map((x) => x.allowed), [true, false, true]);
  // another subject: a server key may ask; an identity may not
  const other = expect(await keys.readonly.post('/v1/authz/check', {
    subject: { collection: people, id: ada.id },
    action: 'read',
    resource: `collections/${posts}/${d.id}`,
  }), 200);
  assert.equal(other.allowed, true);
  assertForbidden(await ada.as.post('/v1/authz/check', { subject: `${people}/${ada.id}`, action: 'read', resource: 'api/auth' }));
  assertV1Error(await keys.server.post('/v1/authz/check', { subject: `${people}/nobody_here`, action: 'read', resource: 'api/auth' }), 404, 'not_found');
  // malformed checks
  for (const body of [{ action: 'read' }, { action: 'read', resource: 'collections/*' }, { action: '*', resource: 'api/x' }, { checks: [] }, { action: 'read', resource: 'api/x', extra: 1 }]) {
    assertV1Error(await ada.as.post('/v1/authz/check', body), 400, 'invalid_request');
  }
  // anonymous callers may not use check (the anonymous role does not grant authz:check)
  assertUnauthorized(await v1(server, 'POST', '/v1/authz/check', { body: { action: 'login', resource: 'api/auth' } }));
});

test('/v1/me/rights: every controller/action and collection/action with allowed, conditional or denied', async () => {
  const { profile: p } = await ownerProfile();
  const ada = await person([p]);
  const { rights } = expect(await ada.as.get('/v1/me/rights'), 200);
  const value = (resource, action) => rights.find((x) => x.resource === resource && x.action === action)?.value;
  assert.equal(value('api/auth', 'login'), 'allowed');
  assert.equal(value('api/auth', 'me'), 'denied', 'the owner profile does not include the default role');
  assert.equal(value('api/key', 'create'), 'denied');
  assert.equal(value(`collections/${posts}`, 'read'), 'conditional');
  assert.equal(value(`collections/${posts}`, 'list'), 'allowed');
  // collections the caller's roles do not name are not listed to a caller that may not list
  // collections: their names are not everyone's business
  assert.equal(value(`collections/${people}`, 'read'), undefined);
  // an identity with the default profile
  const bob = await person(null);
  const b = expect(await bob.as.get('/v1/me/rights'), 200).rights;
  assert.equal(b.find((x) => x.resource === 'api/auth' && x.action === 'me').value, 'allowed');
  // admin key: everything allowed
  const a = expect(await admin.get('/v1/me/rights'), 200).rights;
  assert.ok(a.every((x) => x.value === 'allowed'), 'admin may do everything');
  // anonymous: allowed to ask (the anonymous role has auth:rights)
  const anon = expect(await v1(server, 'GET', '/v1/me/rights'), 200).rights;
  assert.equal(anon.find((x) => x.resource === 'api/auth' && x.action === 'login').value, 'allowed');
  assert.equal(anon.find((x) => x.resource === 'api/token' && x.action === 'list').value, 'denied');
  assert.ok(!anon.some((x) => x.resource === `collections/${posts}`), 'anonymous callers see no collection names');
  // a server-readonly key may list collections: it sees them all
  const ro = expect(await keys.readonly.get('/v1/me/rights'), 200).rights;
  assert.equal(ro.find((x) => x.resource === `collections/${people}` && x.action === 'read').value, 'allowed');
});

test('keys of a defined role: the role\'s privileges, no profile', async () => {
  const r = uniqueName('reporter');
  await role({ name: r, privileges: [{ resource: `collections/${posts}`, actions: { read: true, list: true } }, { resource: 'api/collection', actions: { list: true } }] });
  assertV1Error(await admin.post('/v1/keys', { role: 'no_such_role' }), 400, 'invalid_request');
  const key = expect(await admin.post('/v1/keys', { role: r }), 201).key;
  const k = caller(server, key.secret);
  const d = expect(await keys.server.post(docs(posts), { data: { owner: 'x' } }), 201);
  expect(await k.get(`${docs(posts)}/${d.id}`), 200);
  expect(await k.get('/v1/collections'), 200);
  assertForbidden(await k.post(docs(posts), { data: {} }));
  assertForbidden(await k.get(`${docs(people)}/${d.id}`));
  assertForbidden(await k.get('/v1/tokens'));
});

test('AccessProvider claims mapped to a defined role: an outside JWT gets that role\'s rights', async () => {
  const key = await makeKey('ES256');
  const jwks = await startJwksServer([key.jwk]);
  try {
    const r = uniqueName('ops');
    await role({ name: r, privileges: [{ resource: 'api/dashboard', actions: { view: true } }] });
    const name = uniqueName('idp');
    const issuer = `https://${name}.example`;
    expect(await admin.post('/v1/access-providers', {
      name,
      issuer,
      jwks_uri: jwks.url,
      roles: [{ role: r, predicate: '"ops" in claims.groups && claims.aal == "aal2"' }],
    }), 201);
    const jwt = (claims) => sign(key, { iss: issuer, aud: AUD, sub: uniqueName('sub'), exp: now() + 300, ...claims });
    const ops = await jwt({ groups: ['ops'], aal: 'aal2' });
    const r1 = expect(await v1(server, 'POST', '/v1/authz/check', { as: ops, body: { resource: 'api/dashboard', action: 'view' } }), 200);
    assert.equal(r1.allowed, true);
    assert.equal(r1.explain.role, r);
    assert.equal(r1.explain.via, 'provider');
    const weak = await jwt({ groups: ['ops'], aal: 'aal1' });
    const r2 = await v1(server, 'POST', '/v1/authz/check', { as: weak, body: { resource: 'api/dashboard', action: 'view' } });
    // no rule matched and no identity: the token maps to nothing
    assertUnauthorized(r2);
  } finally {
    await jwks.stop();
  }
});
