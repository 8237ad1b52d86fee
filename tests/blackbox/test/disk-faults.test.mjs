// Disk faults (issue 7), SQLite: the database lives on a small tmpfs of its own.
//
// - Disk full: with the file system filled by a filler file, sign-ups, logins and refreshes get
//   503 service_unavailable JSON with Retry-After — never a 500, never a crash — while reads
//   (GET /user, /health, /ready) keep working; the database passes PRAGMA integrity_check; once
//   the filler is removed, writes succeed again without a restart, and every sign-up that was
//   acknowledged (before, during and after) signs in.
// - Read-only: Linux refuses to remount a file system read-only while a process has files on it
//   open for writing (EBUSY), so a running server cannot have its database turned read-only under
//   it this way; the test checks that refusal (and, on a kernel that allowed it, that writes get
//   503 and reads work). A server started on a read-only database refuses to start with a message
//   naming the database (exit status 1, no crash), the database is intact, and after the remount
//   read-write it starts and serves every acknowledged user.
//
// Needs root (mount); skipped with the reason otherwise, and on PostgreSQL (nothing of it is
// SQLite's file there). DISK_FAULT_SECONDS (default 2) is how long the disk stays full under load.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  BIN,
  PG,
  startServer,
  finish,
  test,
  api,
  newUser,
  getUserRaw,
  refreshRaw,
  passwordRaw,
  uniqueEmail,
  sleep,
  seen,
} from '../lib/server.mjs';

const FULL_SECONDS = Number(process.env.DISK_FAULT_SECONDS || 2);
const PASSWORD = 'correct-horse-disk';

// Mounts of this file left mounted (a test that timed out) are detached when the process exits.
const mounts = new Set();
process.on('exit', () => {
  for (const dir of mounts) {
    try {
      execFileSync('umount', ['-l', dir], { stdio: 'pipe' });
      fs.rmdirSync(dir);
    } catch {
      // nothing more can be done here
    }
  }
});

function mountTmpfs(sizeKiB) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-disk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
  mounts.add(dir);
  return dir;
}

function unmount(dir) {
  try {
    execFileSync('mount', ['-o', 'remount,rw', dir], { stdio: 'pipe' });
  } catch {
    // already read-write
  }
  execFileSync('umount', [dir], { stdio: 'pipe' });
  mounts.delete(dir);
  fs.rmdirSync(dir);
}

/** mount -o remount,MODE; resolves {ok, stderr}. */
function remount(dir, mode) {
  return new Promise((resolve) => {
    execFile('mount', ['-o', `remount,${mode}`, dir], (err, _out, stderr) => resolve({ ok: !err, stderr }));
  });
}

function skipReason() {
  if (PG) return 'SQLite only: the faults are on the database file';
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root to mount a tmpfs';
  try {
    unmount(mountTmpfs(1024));
  } catch (e) {
    return `cannot mount a tmpfs here: ${String(e.stderr || e.message).trim()}`;
  }
  return null;
}

const skip = skipReason() ?? false;
if (skip) console.log(`# disk-faults skipped: ${skip}`);

function integrity(dbPath, { immutable = false } = {}) {
  const target = immutable ? `file:${dbPath}?immutable=1` : dbPath;
  return execFileSync('sqlite3', ['-cmd', '.timeout 10000', target, 'PRAGMA integrity_check;'], {
    encoding: 'utf8',
  }).trim();
}

/**
 * Fills the file system holding dir with one file until ENOSPC, writing asynchronously so that
 * the clients' requests go on meanwhile; resolves its path.
 */
async function fill(dir) {
  const file = path.join(dir, 'filler');
  const fh = await fs.promises.open(file, 'w');
  try {
    for (const size of [256 << 10, 16 << 10, 4096, 512]) {
      const buf = Buffer.alloc(size, 0x5a);
      try {
        for (;;) await fh.write(buf);
      } catch (e) {
        if (e.code !== 'ENOSPC') throw e;
      }
    }
  } finally {
    await fh.close();
  }
  return file;
}

/** Every answer of a write while the disk is full: 200, or 503 service_unavailable as JSON. */
function assertOkOr503(res, what) {
  if (res.status === 200) return true;
  assert.equal(res.status, 503, `${what}: ${res.status} ${res.text}`);
  assert.equal(res.body?.code, 'service_unavailable', `${what}: ${res.text}`);
  assert.equal(typeof res.body.message, 'string');
  assert.equal(res.headers.get('retry-after'), '1', `${what}: Retry-After`);
  return false;
}

let mnt;
let server;

/** Every sign-up the server acknowledged: {email, id}. */
const acked = [];

if (!skip) {
  before(async () => {
    mnt = mountTmpfs(16 * 1024);
    // startServer puts the database in a fresh directory under os.tmpdir(): here, the tmpfs.
    const tmp = process.env.TMPDIR;
    process.env.TMPDIR = mnt;
    try {
      server = await startServer({});
    } finally {
      if (tmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmp;
    }
    assert.ok(server.dbPath.startsWith(mnt), server.dbPath);
  });

  after(async () => {
    // 503 is this file's expected answer while the disk is full (each one checked above);
    // anything else 5xx is not.
    for (let i = seen.length - 1; i >= 0; i--) if (seen[i].status === 503) seen.splice(i, 1);
    try {
      await finish(server);
    } finally {
      if (mnt) unmount(mnt);
    }
  });
}

async function signup(target) {
  const email = uniqueEmail('disk');
  const r = await api(target, 'POST', '/signup', { body: { email, password: PASSWORD } });
  if (assertOkOr503(r, 'signup')) acked.push({ email, id: r.body.user.id });
  return r;
}

async function assertAllSignIn(target, what) {
  for (const u of acked) {
    const r = await passwordRaw(target, u.email, PASSWORD);
    assert.equal(r.status, 200, `${what}: acknowledged user ${u.email}: ${r.text}`);
    assert.equal(r.body.user.id, u.id);
  }
}

const fullName = 'disk full: writes get 503 JSON, reads work, nothing is corrupted, and writes recover without a restart';
test(fullName, { skip, timeout: 60000 + FULL_SECONDS * 3000 }, async (t) => {
  const u0 = await newUser(server, { prefix: 'disk-before', password: PASSWORD });
  acked.push({ email: u0.email, id: u0.user.id });
  for (let i = 0; i < 20; i++) assert.equal((await signup(server)).status, 200);

  const statuses = { 200: 0, 503: 0 };
  let refresh = u0.session.refresh_token;
  // Four clients write (two sign up, one logs in, one refreshes) and a fifth reads; the disk
  // fills up under them and stays full for FULL_SECONDS.
  let until = Infinity;
  let logins = 0; // round robin over the accounts, so that no per-account limit is reached
  const writers = Array.from({ length: 4 }, async (_, w) => {
    while (Date.now() < until) {
      const r =
        w === 3
          ? await refreshRaw(server, refresh)
          : w === 2
            ? await passwordRaw(server, acked[logins++ % acked.length].email, PASSWORD)
            : await signup(server);
      if (w === 3 && assertOkOr503(r, 'refresh')) refresh = r.body.refresh_token;
      if (w === 2) assertOkOr503(r, 'login');
      statuses[r.status]++;
    }
  });
  const reads = [];
  const reader = (async () => {
    while (Date.now() < until) {
      reads.push((await getUserRaw(server, u0.session.access_token)).status);
      reads.push((await api(server, 'GET', '/health')).status);
      await sleep(20);
    }
  })();
  await sleep(300);
  let filler;
  try {
    filler = await fill(mnt);
  } finally {
    until = Date.now() + FULL_SECONDS * 1000;
  }
  await Promise.all([...writers, reader]);
  t.diagnostic(
    `writes from 300 ms before the disk filled up to ${FULL_SECONDS} s after: ${JSON.stringify(statuses)}; ` +
      `reads: ${reads.length}`,
  );
  assert.ok(statuses[503] > 0, `no write failed while the disk was full: ${JSON.stringify(statuses)}`);
  assert.deepEqual([...new Set(reads)], [200], 'GET /user and /health work while the disk is full');
  // /ready checks that the database answers and its schema is current: it does (reads work), so
  // the node stays ready; writes say 503 with Retry-After on their own.
  const ready = await api(server, 'GET', '/ready');
  assert.equal(ready.status, 200, ready.text);
  assert.equal(server.exitInfo(), null, 'the server is still running');
  assert.equal(integrity(server.dbPath), 'ok', 'integrity while the disk is full');

  fs.unlinkSync(filler);
  // Recovery without a restart: the next writes succeed.
  for (let i = 0; i < 20; i++) {
    const r = await signup(server);
    assert.equal(r.status, 200, `sign-up ${i} after the disk has room again: ${r.text}`);
  }
  const r = await refreshRaw(server, refresh);
  assert.equal(r.status, 200, r.text);
  assert.equal(integrity(server.dbPath), 'ok');
  await assertAllSignIn(server, 'after the disk full');
});

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Runs `tessera serve` on the SQLite file dbPath with the first server's settings. Resolves
 * {url, anonKey, stop()} once /health answers, or {exit, log} when it exits first.
 */
async function serve(dbPath) {
  const port = await freePort();
  const env = { ...server.env, TESSERA_DATABASE_URL: `sqlite://${dbPath}`, TESSERA_LISTEN: `127.0.0.1:${port}` };
  const child = spawn(BIN, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  let exit = null;
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exit = { code, signal }))));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  while (!exit && Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    await sleep(25);
  }
  if (exit) return { exit, log };
  if (Date.now() >= deadline) {
    child.kill('SIGKILL');
    await exited;
    assert.fail(`tessera serve did not become ready:\n${log}`);
  }
  return {
    url,
    anonKey: server.anonKey, // the copy holds the same keys
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      return exited;
    },
  };
}

const readOnlyName =
  'read-only: no remount under a running server; a read-only database is refused at start, intact, and served ' +
  'again once writable';
test(readOnlyName, { skip }, async () => {
  // A database of its own on a second tmpfs (the first server keeps its files open on the first).
  const mnt2 = mountTmpfs(16 * 1024);
  try {
    const dbPath = path.join(mnt2, 'tessera.db');
    execFileSync('sqlite3', ['-cmd', '.timeout 10000', server.dbPath, `.backup '${dbPath}'`], { stdio: 'pipe' });
    let node = await serve(dbPath);
    assert.ok(!node.exit, `the copy serves: ${node.log}`);
    for (let i = 0; i < 5; i++) assert.equal((await signup(node)).status, 200);
    const u = await newUser(node, { prefix: 'disk-ro', password: PASSWORD });
    acked.push({ email: u.email, id: u.user.id });

    const live = await remount(mnt2, 'ro');
    if (live.ok) {
      // A kernel that allows it: writes get 503, reads still work, and writes return after rw.
      const body = { email: uniqueEmail('disk-ro'), password: PASSWORD };
      assertOkOr503(await api(node, 'POST', '/signup', { body }), 'signup on ro');
      assert.equal((await getUserRaw(node, u.session.access_token)).status, 200);
      assert.equal((await remount(mnt2, 'rw')).ok, true);
      assert.equal((await signup(node)).status, 200);
    } else {
      assert.match(live.stderr, /busy/i, `remount ro under a running server: ${live.stderr}`);
    }
    assert.equal(integrity(dbPath), 'ok');
    const stopped = await node.stop();
    assert.deepEqual(stopped, { code: 0, signal: null }, node.log());

    assert.equal((await remount(mnt2, 'ro')).ok, true, 'remount ro with the server stopped');
    const refused = await serve(dbPath);
    assert.ok(refused.exit, 'tessera serve must not start on a read-only database');
    assert.deepEqual(refused.exit, { code: 1, signal: null }, refused.log);
    assert.match(refused.log, /cannot open SQLite database/, refused.log);
    assert.equal(integrity(dbPath, { immutable: true }), 'ok', 'integrity on the read-only mount');

    assert.equal((await remount(mnt2, 'rw')).ok, true);
    node = await serve(dbPath);
    assert.ok(!node.exit, `serves again once writable: ${node.log}`);
    assert.equal((await getUserRaw(node, u.session.access_token)).status, 200);
    for (let i = 0; i < 5; i++) assert.equal((await signup(node)).status, 200);
    await assertAllSignIn(node, 'after read-only');
    assert.deepEqual(await node.stop(), { code: 0, signal: null });
    assert.equal(integrity(dbPath), 'ok');
  } finally {
    unmount(mnt2);
  }
});
