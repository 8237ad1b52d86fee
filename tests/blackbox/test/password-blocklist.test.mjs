// PASSWORD_BLOCKLIST: breached passwords refused, offline, wherever a password is set. The list
// is a file in Have I Been Pwned's downloadable format (upper-case SHA1:COUNT, sorted by hash,
// CRLF). Refusals follow GoTrue's contract: 422 weak_password with weak_password.reasons
// ["pwned"] (auth-js's AuthWeakPasswordError), in both error shapes; /v1's equivalent; the
// CLI's user add/passwd. A sign-in with a password that is listed since it was set succeeds and
// reports weak_password with the session, as GoTrue does. A malformed list stops the start.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { isAuthWeakPasswordError } from '@supabase/auth-js';
import { BIN, startServer, finish, test, makeClient, adminClient, uniqueEmail, api, assertApiError, newUser } from '../lib/server.mjs';
import { v1, setupKeys, createCollection, uniqueName, expect, assertV1Error } from '../lib/v1.mjs';

const PWNED = ['P@ssw0rd-listed', 'sunshine-and-rainbows', 'hunter2hunter2', 'Zz9-last-of-the-list'];
const LATER = 'listed-after-it-was-set'; // put on the list only after a user chose it
const SAFE = 'a-password-nobody-listed-8f3k';

const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-blocklist-'));
const listPath = path.join(dir, 'pwned-passwords-sha1-ordered-by-hash.txt');
const sha1 = (s) => createHash('sha1').update(s, 'utf8').digest('hex').toUpperCase();

/** Writes the HIBP-format list: the given passwords among random filler hashes. */
function writeList(passwords) {
  const hashes = new Set(passwords.map(sha1));
  while (hashes.size < 5000) hashes.add(randomBytes(20).toString('hex').toUpperCase());
  const lines = [...hashes].sort().map((h, i) => `${h}:${(i % 97) + 1}`);
  writeFileSync(listPath, lines.join('\r\n') + '\r\n');
}

let server;
const env = { PASSWORD_BLOCKLIST: listPath };

before(async () => {
  writeList(PWNED);
  server = await startServer(env);
});

after(async () => {
  await finish(server);
  rmSync(dir, { recursive: true, force: true });
});

function assertPwned(error) {
  assert.ok(isAuthWeakPasswordError(error), `expected AuthWeakPasswordError, got ${error?.name}: ${error?.message}`);
  assert.equal(error.status, 422);
  assert.equal(error.code, 'weak_password');
  assert.deepEqual(error.reasons, ['pwned']);
}

test('signUp with a breached password: AuthWeakPasswordError, reasons ["pwned"]; others sign up', async () => {
  for (const password of PWNED) {
    const { data, error } = await makeClient(server).signUp({ email: uniqueEmail('pwned'), password });
    assertPwned(error);
    assert.equal(data.user, null);
  }
  const ok = await makeClient(server).signUp({ email: uniqueEmail('safe'), password: SAFE });
  assert.equal(ok.error, null);
  assert.ok(ok.data.session);
  // Case matters: the list holds exact passwords.
  const upper = await makeClient(server).signUp({ email: uniqueEmail('case'), password: PWNED[1].toUpperCase() });
  assert.equal(upper.error, null);
});

test('both error shapes carry weak_password.reasons', async () => {
  const current = await api(server, 'POST', '/signup', { body: { email: uniqueEmail('raw'), password: PWNED[0] } });
  assertApiError(current, 422, 'weak_password');
  assert.deepEqual(current.body.weak_password?.reasons, ['pwned']);
  const legacy = await api(server, 'POST', '/signup', { body: { email: uniqueEmail('raw'), password: PWNED[0] }, version: false });
  assert.equal(legacy.status, 422);
  assert.equal(legacy.body.error_code, 'weak_password');
  assert.deepEqual(legacy.body.weak_password?.reasons, ['pwned']);
  // The length rule still comes first.
  const short = await api(server, 'POST', '/signup', { body: { email: uniqueEmail('raw'), password: 'abc' } });
  assert.deepEqual(short.body.weak_password?.reasons, ['length']);
});

test('PUT /user and the admin API refuse a breached password too', async () => {
  const u = await newUser(server, { password: SAFE });
  const { error } = await u.client.updateUser({ password: PWNED[2] });
  assertPwned(error);
  const again = await u.client.signInWithPassword({ email: u.email, password: SAFE });
  assert.equal(again.error, null, 'the refused change wrote nothing');

  const admin = adminClient(server).admin;
  const created = await admin.createUser({ email: uniqueEmail('adm'), password: PWNED[3], email_confirm: true });
  assertPwned(created.error);
  const ok = await admin.createUser({ email: uniqueEmail('adm'), password: SAFE, email_confirm: true });
  assert.equal(ok.error, null);
  const upd = await admin.updateUserById(ok.data.user.id, { password: PWNED[0] });
  assertPwned(upd.error);
});

test('/v1 credentials refuse a breached password with 422 weak_password', async () => {
  const keys = await setupKeys(server);
  const coll = await createCollection(keys.admin, uniqueName('people'));
  const docs = `/v1/collections/${coll}/documents`;
  const id = uniqueName('p');
  const r = await keys.admin.post(docs, { id, data: {}, credentials: { password: PWNED[1] } });
  assertV1Error(r, 422, 'weak_password');
  assert.deepEqual(r.body.weak_password?.reasons, ['pwned']);
  assertV1Error(await keys.admin.get(`${docs}/${id}`), 404, 'not_found');
  expect(await keys.admin.post(docs, { id, data: {}, credentials: { password: SAFE } }), 201);
  assertV1Error(await keys.admin.patch(`${docs}/${id}`, { credentials: { password: PWNED[2] } }), 422, 'weak_password');
  expect(await v1(server, 'POST', '/v1/login', { body: { collection: coll, id, password: SAFE } }), 200);
});

test('tessera user add / passwd refuse a breached password', async () => {
  const run = (args, input) => spawnSync(BIN, args, { env: server.env, input, encoding: 'utf8' });
  const email = uniqueEmail('cli');
  const bad = run(['user', 'add', email], `${PWNED[0]}\n`);
  assert.equal(bad.status, 2, bad.stderr);
  assert.match(bad.stderr, /breached passwords/);
  assert.ok(!bad.stderr.includes(PWNED[0]), 'the refusal does not echo the password');
  assert.equal(run(['user', 'add', email], `${SAFE}\n`).status, 0);
  const passwd = run(['user', 'passwd', email], `${PWNED[3]}\n`);
  assert.equal(passwd.status, 2, passwd.stderr);
  assert.match(passwd.stderr, /breached passwords/);
});

test('a password listed after it was set still signs in, with weak_password reported', async () => {
  const u = await newUser(server, { password: LATER });
  writeList([...PWNED, LATER]);
  await server.restart();
  const { data, error } = await makeClient(server).signInWithPassword({ email: u.email, password: LATER });
  assert.equal(error, null);
  assert.ok(data.session, 'the sign-in itself succeeds');
  assert.deepEqual(data.weakPassword?.reasons, ['pwned']);
  const safe = await newUser(server, { password: SAFE });
  const again = await makeClient(server).signInWithPassword({ email: safe.email, password: SAFE });
  assert.equal(again.data.weakPassword ?? null, null);
});

test('a plain list of passwords works too; a malformed file stops the start', async () => {
  const plain = path.join(dir, 'plain.txt');
  writeFileSync(plain, 'qwerty123\r\nletmein-please\n\nsummer2024!\n');
  const serve = (file) =>
    spawnSync(BIN, ['serve'], {
      env: { ...server.env, TESSERA_LISTEN: '127.0.0.1:0', TESSERA_PASSWORD_BLOCKLIST: file },
      encoding: 'utf8',
      timeout: 20000,
    });
  const ntlm = path.join(dir, 'ntlm.txt');
  writeFileSync(ntlm, '8846F7EAEE8FB117AD06BDD830B7586C:1\r\n');
  let r = serve(ntlm);
  assert.equal(r.status, 1, `serve with an NTLM list: ${r.stderr}`);
  assert.match(r.stderr, /PASSWORD_BLOCKLIST .*NTLM/);
  const unsorted = path.join(dir, 'unsorted.txt');
  writeFileSync(unsorted, `${sha1('b')}:1\r\n${sha1('a')}:1\r\n${'F'.repeat(40)}:3\r\n`);
  r = serve(unsorted);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /not sorted by hash/);
  r = serve(path.join(dir, 'missing.txt'));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /PASSWORD_BLOCKLIST .*cannot open/);

  env.PASSWORD_BLOCKLIST = plain;
  await server.restart();
  const { error } = await makeClient(server).signUp({ email: uniqueEmail('plain'), password: 'letmein-please' });
  assertPwned(error);
  const ok = await makeClient(server).signUp({ email: uniqueEmail('plain'), password: PWNED[0] });
  assert.equal(ok.error, null, 'the hashed list is no longer in use');
});
