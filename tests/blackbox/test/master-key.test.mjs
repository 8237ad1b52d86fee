// Signing keys at rest under TESSERA_MASTER_KEY, on SQLite and PostgreSQL: a database from
// before the master key has its keys in clear (which proves the checks below can see one); the
// first start with a key seals them, and neither the database (on SQLite: the file and its WAL,
// byte for byte) nor the logs hold the private keys or the master key afterwards; tokens
// signed before keep verifying across restarts; a wrong or missing master key stops the start
// with a clear message and changes nothing; a rotation (new key, old one as _PREVIOUS)
// re-seals every row, through a restart or `tessera jwt rewrap`; `jwt rotate` writes sealed
// keys that a running server picks up.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { BIN, startServer, finish, test, newUser, getUserRaw, jwtHeader, sleep } from '../lib/server.mjs';

const KEY_A = randomBytes(32).toString('hex');
const KEY_B = randomBytes(32).toString('base64');
const KEY_C = randomBytes(32).toString('base64url');

let server;
const env = {}; // the server's settings; restart() reads them again
let token; // an access token signed while the keys were in clear
let clearPems = []; // the private keys as the database held them then

before(async () => {
  server = await startServer(env);
});

after(async () => {
  await finish(server);
});

function cli(args, extra = {}) {
  const e = { ...server.env };
  for (const [k, v] of Object.entries(extra)) {
    if (v === null) delete e[k];
    else e[k] = v;
  }
  const r = spawnSync(BIN, args, { env: e, encoding: 'utf8', timeout: 30000 });
  return { code: r.status, out: r.stdout, err: r.stderr, signal: r.signal };
}

/** The signing_keys rows: [{kid, pem}] (pem: the stored text, sealed or not). */
function storedKeys() {
  let out;
  if (server.backend === 'sqlite') {
    const r = spawnSync('sqlite3', ['-cmd', '.timeout 10000', server.dbPath,
      "SELECT json_group_array(json_object('kid', kid, 'pem', private_pem)) FROM signing_keys"], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    out = r.stdout;
  } else {
    const u = new URL(server.dbUrl);
    const r = spawnSync('psql', ['-h', u.searchParams.get('host'), '-p', u.searchParams.get('port'), '-U', 'postgres',
      '-d', u.pathname.slice(1), '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c',
      "SELECT json_agg(json_build_object('kid', kid, 'pem', private_pem)) FROM tessera.signing_keys"], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    out = r.stdout;
  }
  return JSON.parse(out.trim() || '[]') ?? [];
}

/** Everything the database holds, as text: on SQLite the file and its WAL byte for byte. */
function databaseBytes() {
  if (server.backend === 'sqlite') {
    let s = '';
    for (const f of [server.dbPath, `${server.dbPath}-wal`]) if (existsSync(f)) s += readFileSync(f).toString('latin1');
    return s;
  }
  return JSON.stringify(storedKeys());
}

/** The base64 lines of a PEM's body: what a clear key would show of itself. */
const bodyLines = (pem) => pem.split('\n').filter((l) => l && !l.startsWith('-----'));

function assertNoClearKey(what) {
  const bytes = databaseBytes();
  assert.ok(!/PRIVATE KEY/.test(bytes), `${what}: a PEM private key is in the database`);
  for (const pem of clearPems) {
    for (const line of bodyLines(pem)) assert.ok(!bytes.includes(line), `${what}: a line of an old key's PEM is in the database`);
  }
  for (const k of [KEY_A, KEY_B, KEY_C]) assert.ok(!bytes.includes(k), `${what}: a master key is in the database`);
}

/** kid -> at-rest column of `tessera jwt list`. */
function atRest(extra) {
  const r = cli(['jwt', 'list'], extra);
  assert.equal(r.code, 0, r.err);
  const m = new Map();
  for (const line of r.out.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length >= 4) m.set(cols[0], cols[cols.length - 1]);
  }
  return m;
}

function assertLogsClean() {
  const text = server.logs().join('\n');
  for (const k of [KEY_A, KEY_B, KEY_C]) assert.ok(!text.includes(k), 'a master key appears in the server log');
  for (const pem of clearPems) for (const line of bodyLines(pem)) assert.ok(!text.includes(line), 'a private key appears in the log');
}

async function assertTokenVerifies(what) {
  const r = await getUserRaw(server, token);
  assert.equal(r.status, 200, `${what}: GET /user with a token signed before: ${r.text}`);
}

/** Starts `tessera serve` on the server's database with other settings; it must refuse. */
function assertRefusesToStart(extra, want) {
  const r = cli(['serve'], { TESSERA_LISTEN: '127.0.0.1:0', ...extra });
  assert.equal(r.code, 1, `serve should have refused (code ${r.code}, signal ${r.signal}):\n${r.out}\n${r.err}`);
  assert.match(r.err, want);
  assert.match(r.err, /not starting/);
  for (const k of [KEY_A, KEY_B, KEY_C]) assert.ok(!r.err.includes(k) && !r.out.includes(k), 'the refusal quotes a master key');
}

test('without a master key the keys are stored in clear (the checks below can see one)', async () => {
  const u = await newUser(server);
  token = u.session.access_token;
  assert.equal(jwtHeader(token).alg, 'ES256');
  const rows = storedKeys();
  assert.equal(rows.length, 2);
  for (const r of rows) assert.match(r.pem, /^-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  clearPems = rows.map((r) => r.pem);
  assert.ok(databaseBytes().includes(bodyLines(clearPems[0])[0]));
  for (const v of atRest().values()) assert.equal(v, 'clear');
});

test('the first start with TESSERA_MASTER_KEY seals every key; old tokens still verify', async () => {
  env.MASTER_KEY = KEY_A;
  await server.restart();
  const rows = storedKeys();
  assert.equal(rows.length, 2);
  for (const r of rows) assert.match(r.pem, /^\$tsmk1\$[0-9a-f]{12}\$[A-Za-z0-9_-]+$/);
  assertNoClearKey('after sealing');
  await assertTokenVerifies('after sealing');
  const ids = new Set(atRest({}).values());
  assert.equal(ids.size, 1);
  assert.match([...ids][0], /^sealed:[0-9a-f]{12}$/);
  // New tokens are signed with the same (now sealed) key, and survive another restart.
  const u = await newUser(server);
  await server.restart();
  assert.equal((await getUserRaw(server, u.session.access_token)).status, 200);
  await assertTokenVerifies('after a restart');
  assertLogsClean();
});

test('a wrong or missing master key stops the start with a clear message and changes nothing', async () => {
  const before = storedKeys();
  assertRefusesToStart({ TESSERA_MASTER_KEY: KEY_B }, /sealed under master key [0-9a-f]{12}, not under TESSERA_MASTER_KEY/);
  assertRefusesToStart({ TESSERA_MASTER_KEY: null }, /TESSERA_MASTER_KEY is not set/);
  // The CLI refuses the same way (key show would otherwise mint API keys from fresh keys).
  const show = cli(['key', 'show'], { TESSERA_MASTER_KEY: KEY_C });
  assert.notEqual(show.code, 0);
  assert.doesNotMatch(show.out, /anon key/);
  // A malformed key is a configuration error naming the setting, not its value.
  const bad = cli(['serve'], { TESSERA_MASTER_KEY: 'not-a-key' });
  assert.equal(bad.code, 2);
  assert.match(bad.err, /TESSERA_MASTER_KEY: expected 32 random bytes/);
  assert.deepEqual(storedKeys(), before);
  await assertTokenVerifies('after the refusals');
});

test('master key rotation: the new key with the old one as _PREVIOUS re-seals every row', async () => {
  const idA = [...new Set(atRest().values())][0];
  env.MASTER_KEY = KEY_B;
  env.MASTER_KEY_PREVIOUS = KEY_A;
  await server.restart();
  const idB = [...new Set(atRest().values())];
  assert.equal(idB.length, 1);
  assert.notEqual(idB[0], idA);
  await assertTokenVerifies('after the rotation');
  // The old key is no longer needed, and no longer enough.
  delete env.MASTER_KEY_PREVIOUS;
  await server.restart();
  await assertTokenVerifies('with the new key alone');
  assertRefusesToStart({ TESSERA_MASTER_KEY: KEY_A, TESSERA_MASTER_KEY_PREVIOUS: null }, /not under TESSERA_MASTER_KEY/);
  assertNoClearKey('after the rotation');
  assertLogsClean();
});

test('tessera jwt rewrap re-seals offline, and jwt rotate writes sealed keys a running server uses', async () => {
  // To C while the server runs with B: it keeps serving with the keys it has loaded.
  const r = cli(['jwt', 'rewrap'], { TESSERA_MASTER_KEY: KEY_C, TESSERA_MASTER_KEY_PREVIOUS: KEY_B });
  assert.equal(r.code, 0, r.err);
  const idsC = new Set(atRest({ TESSERA_MASTER_KEY: KEY_C }).values());
  assert.equal(idsC.size, 1);
  assert.match(r.out, new RegExp([...idsC][0].replace('sealed:', '')));
  // rewrap without a master key: the sealed keys do not even open
  const none = cli(['jwt', 'rewrap'], { TESSERA_MASTER_KEY: null });
  assert.equal(none.code, 1);
  assert.match(none.err, /TESSERA_MASTER_KEY is not set/);
  // ...and back to B, which the running server holds.
  assert.equal(cli(['jwt', 'rewrap'], { TESSERA_MASTER_KEY: KEY_B, TESSERA_MASTER_KEY_PREVIOUS: KEY_C }).code, 0);
  await assertTokenVerifies('after two rewraps');

  const rot = cli(['jwt', 'rotate']);
  assert.equal(rot.code, 0, rot.err);
  const newKid = /active signing key is now (\S+)/.exec(rot.out)[1];
  const kinds = atRest();
  assert.equal(kinds.size, 3);
  assert.equal(new Set(kinds.values()).size, 1, 'every key, the new one included, is sealed under one key');
  assertNoClearKey('after jwt rotate');
  // The running server picks the rotation up within a second and signs with the new key.
  let kid;
  for (let i = 0; i < 60 && kid !== newKid; i++) {
    await sleep(100);
    kid = jwtHeader((await newUser(server)).session.access_token).kid;
  }
  assert.equal(kid, newKid);
  await assertTokenVerifies('after jwt rotate (a retired key)');
});

test('a new database with a master key never holds a key in clear', async () => {
  const fresh = await startServer({ MASTER_KEY: KEY_C });
  try {
    const saved = server;
    server = fresh;
    try {
      for (const r of storedKeys()) assert.match(r.pem, /^\$tsmk1\$/);
      const bytes = databaseBytes();
      assert.ok(!/PRIVATE KEY/.test(bytes));
      assert.ok(!bytes.includes(KEY_C));
      const u = await newUser(fresh);
      assert.equal((await getUserRaw(fresh, u.session.access_token)).status, 200);
    } finally {
      server = saved;
    }
  } finally {
    await finish(fresh);
  }
});
