// The tessera command line against a running server's database: user add/list/passwd/delete,
// key show, jwt list/rotate, version and --help. Changes made by the CLI (another process)
// must reach the running server: deletions and password changes end sessions at once (the
// server notices other processes' commits within 0.1 s), rotations within a second.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  BIN,
  startServer,
  finish,
  test,
  newUser,
  makeClient,
  getUserRaw,
  api,
  assertApiError,
  uniqueEmail,
  jwtHeader,
  sleep,
} from '../lib/server.mjs';

let server;

before(async () => {
  server = await startServer({});
});

after(async () => {
  await finish(server);
});

function cli(args, input) {
  const r = spawnSync(BIN, args, { env: server.env, input: input ?? '', encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

async function eventually(fn, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const ok = await fn();
    if (ok || Date.now() > deadline) return ok;
    await sleep(50);
  }
}

test('version and --help of every command', () => {
  const v = cli(['version']);
  assert.equal(v.code, 0);
  assert.match(v.out, /^tessera \d+\.\d+\.\d+/);
  for (const cmd of ['serve', 'migrate', 'user', 'key', 'jwt', 'version']) {
    const h = cli([cmd, '--help']);
    assert.equal(h.code, 0, `${cmd} --help: ${h.err}`);
    assert.match(h.out, /usage: tessera/, cmd);
  }
  const serveHelp = cli(['serve', '--help']).out;
  for (const knob of ['TESSERA_LISTEN', 'TESSERA_DATABASE_URL', 'TESSERA_JWT_SECRET', 'TESSERA_PASSWORD_HASH_WORKERS']) {
    assert.ok(serveHelp.includes(knob), `serve --help lists ${knob}`);
  }
  assert.equal(cli(['no-such-command']).code, 2);
});

test('a malformed or unknown setting stops the command with its name', () => {
  const r = spawnSync(BIN, ['migrate'], {
    env: { ...server.env, TESSERA_JWT_EXP: 'soon' },
    encoding: 'utf8',
  });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /TESSERA_JWT_EXP/);
  const u = spawnSync(BIN, ['migrate'], {
    env: { ...server.env, TESSERA_NO_SUCH_KNOB: '1' },
    encoding: 'utf8',
  });
  assert.notEqual(u.status, 0);
  assert.match(u.stderr, /TESSERA_NO_SUCH_KNOB/);
});

test('user add (password on stdin) signs in through auth-js; user list shows it', async () => {
  const email = uniqueEmail('cli-add');
  const add = cli(['user', 'add', email], 'cli-password-1\n');
  assert.equal(add.code, 0, add.err);
  const id = add.out.trim();
  const { data, error } = await makeClient(server).signInWithPassword({ email, password: 'cli-password-1' });
  assert.equal(error, null);
  assert.equal(data.user.id, id);
  const list = JSON.parse(cli(['user', 'list', '--json']).out);
  assert.ok(list.some((u) => u.id === id && u.email === email));
  assert.equal(cli(['user', 'add', email], 'cli-password-1\n').code, 1, 'a taken e-mail is refused');
});

test('user delete from the CLI ends the user\'s sessions on the running server at once', async () => {
  const u = await newUser(server, { prefix: 'cli-del' });
  assert.equal((await getUserRaw(server, u.session.access_token)).status, 200); // now cached
  const del = cli(['user', 'delete', u.email]);
  assert.equal(del.code, 0, del.err);
  const refused = await eventually(async () => (await getUserRaw(server, u.session.access_token)).status === 403, 1000);
  assert.ok(refused, 'the deleted user\'s token is refused within a second');
  assertApiError(await getUserRaw(server, u.session.access_token), 403, 'session_not_found');
});

test('user passwd from the CLI sets the password and ends the sessions', async () => {
  const u = await newUser(server, { prefix: 'cli-passwd' });
  assert.equal((await getUserRaw(server, u.session.access_token)).status, 200);
  const r = cli(['user', 'passwd', u.email], 'brand-new-password\n');
  assert.equal(r.code, 0, r.err);
  assert.ok(await eventually(async () => (await getUserRaw(server, u.session.access_token)).status === 403, 1000));
  const old = await makeClient(server).signInWithPassword({ email: u.email, password: u.password });
  assert.equal(old.error?.code, 'invalid_credentials');
  const neu = await makeClient(server).signInWithPassword({ email: u.email, password: 'brand-new-password' });
  assert.equal(neu.error, null);
});

test('key show prints working anon and service_role keys', async () => {
  const keys = JSON.parse(cli(['key', 'show', '--json']).out);
  const list = await api(server, 'GET', '/admin/users', { token: keys.service_role_key });
  assert.equal(list.status, 200);
  assertApiError(await api(server, 'GET', '/admin/users', { token: keys.anon_key }), 403, 'not_admin');
  const text = cli(['key', 'show']).out;
  assert.match(text, /anon key: +eyJ/);
  assert.match(text, /service_role key: +eyJ/);
});

test('jwt rotate: the running server signs with the new key within a second; old tokens keep working', async () => {
  const before = await newUser(server, { prefix: 'cli-rot' });
  const oldKid = jwtHeader(before.session.access_token).kid;
  const listed = cli(['jwt', 'list']).out;
  assert.match(listed, /active/);
  assert.match(listed, /next/);
  const rot = cli(['jwt', 'rotate']);
  assert.equal(rot.code, 0, rot.err);
  const newKid = rot.out.trim().split(/\s+/).pop();
  assert.notEqual(newKid, oldKid);
  const switched = await eventually(async () => {
    const u = await newUser(server, { prefix: 'cli-rot-after' });
    return jwtHeader(u.session.access_token).kid === newKid;
  }, 1500);
  assert.ok(switched, 'new sessions are signed with the promoted key within a second');
  const jwks = (await api(server, 'GET', '/.well-known/jwks.json')).body.keys.map((k) => k.kid);
  assert.ok(jwks.includes(oldKid), 'the retired key is still published');
  assert.ok(jwks.includes(newKid));
  assert.equal((await getUserRaw(server, before.session.access_token)).status, 200, 'old tokens still verify');
  assert.match(cli(['jwt', 'list']).out, /retired/);
});
