// Helpers for Tessera's black-box tests: start a real server on a temp SQLite database and a
// free loopback port, talk to it through @supabase/auth-js or raw HTTP, and record every HTTP
// status seen so that each test file can assert that the server never answered 5xx.
//
// The server binary is $TESSERA_BIN, else <repo>/build/tessera. Paths are resolved from this
// file, so the suite runs the same from the repo root and from tests/blackbox.

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { GoTrueClient } from '@supabase/auth-js';
// The secrets audit (on with TESSERA_TEST_SECRETS_DIR): wraps fetch when imported.
import { finishServer, noteCliOutput, noteConfigSecrets, noteExchange, registerTessera, trackServer } from './secrets.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
export const BIN = process.env.TESSERA_BIN
  ? path.resolve(process.env.TESSERA_BIN)
  : path.join(repoRoot, 'build', 'tessera');

// Defaults every test server gets unless a test overrides them (bare names, TESSERA_ is added).
// Fast argon2 parameters keep the suite quick; the hash-pool test removes them with null.
const DEFAULT_ENV = {
  MAILER_AUTOCONFIRM: 'true',
  PASSWORD_HASH_MEMORY_KIB: '1024',
  PASSWORD_HASH_ITERATIONS: '1',
  LOG_REQUESTS: 'true',
};

// TESSERA_TEST_WRAPPER: a command the server runs under ("valgrind --leak-check=full ...", split
// on spaces; scripts/valgrind.sh sets it), and TESSERA_TEST_SLOWDOWN the factor (default 20 with
// a wrapper) by which the start and stop bounds and each test's timeout then grow. Only
// `tessera serve` is wrapped, not the one-shot commands.
export const WRAPPER = (process.env.TESSERA_TEST_WRAPPER ?? '').split(' ').filter(Boolean);
export const SLOWDOWN = Number(process.env.TESSERA_TEST_SLOWDOWN) || (WRAPPER.length ? 20 : 1);
const STARTUP_TIMEOUT_MS = 20000 * SLOWDOWN;
const STOP_TIMEOUT_MS = 10000 * SLOWDOWN;

// ---------------------------------------------------------------------------------------------
// Status tracking: every response seen by the helpers below lands here.

/** @type {{method:string,url:string,status:number}[]} */
export const seen = [];

function record(method, url, status) {
  seen.push({ method, url: String(url), status });
}

/** fetch() that records the status of every response. Pass it to clients as their fetch. */
export async function trackedFetch(input, init = {}) {
  const res = await fetch(input, init);
  const isReq = typeof input === 'object' && input !== null && 'url' in input;
  const method = init.method ?? (isReq ? input.method : 'GET');
  const url = isReq ? input.url : input;
  record(method, url, res.status);
  return res;
}

/** Returns a fetch that records into `log` ({method, path, headers}) as well as into `seen`. */
export function recordingFetch(log) {
  return async (input, init = {}) => {
    const url = new URL(typeof input === 'object' && input.url ? input.url : String(input));
    log.push({
      method: init.method ?? 'GET',
      path: url.pathname,
      search: url.search,
      headers: new Headers(init.headers ?? {}),
    });
    return trackedFetch(input, init);
  };
}

/** Asserts that no response recorded so far in this process was a 5xx. */
export function assertNo5xx() {
  const bad = seen.filter((r) => r.status >= 500);
  assert.deepEqual(
    bad,
    [],
    `server answered 5xx:\n${bad.map((r) => `${r.status} ${r.method} ${r.url}`).join('\n')}`,
  );
}

// ---------------------------------------------------------------------------------------------
// Server lifecycle

const running = new Set();

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// PostgreSQL mode: when the test script started a throwaway cluster (scripts/pg.sh), every
// server gets a database of its own in it instead of a SQLite file.
export const PG = process.env.TESSERA_TEST_PG_HOST
  ? { host: process.env.TESSERA_TEST_PG_HOST, port: process.env.TESSERA_TEST_PG_PORT || '5432' }
  : null;

function pgTool(tool, args) {
  return runOnce(tool, ['-h', PG.host, '-p', PG.port, '-U', 'postgres', ...args], process.env, true);
}

async function createDatabase() {
  const name = `tessera_${randomBytes(6).toString('hex')}`;
  const r = await pgTool('createdb', [name]);
  if (r.code !== 0) throw new Error(`createdb ${name} failed: ${r.stderr}`);
  return { name, url: `postgresql:///${name}?host=${encodeURIComponent(PG.host)}&port=${PG.port}&user=postgres` };
}

async function dropDatabase(name) {
  await pgTool('dropdb', ['--force', '--if-exists', name]);
}

function buildEnv(overrides, dbPath, port) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('TESSERA_') && !k.startsWith('GOTRUE_')) env[k] = v;
  }
  const bare = { ...DEFAULT_ENV };
  const verbatim = {};
  for (const [k, v] of Object.entries(overrides)) {
    const m = /^(TESSERA|GOTRUE)_(.*)$/.exec(k);
    if (m) {
      // An explicit TESSERA_X / GOTRUE_X wins over our default for X.
      delete bare[m[2]];
      if (v !== null && v !== undefined) verbatim[k] = String(v);
    } else if (v === null || v === undefined) {
      delete bare[k];
    } else {
      bare[k] = String(v);
    }
  }
  for (const [k, v] of Object.entries(bare)) env[`TESSERA_${k}`] = v;
  Object.assign(env, verbatim);
  env.TESSERA_LISTEN = `127.0.0.1:${port}`;
  env.TESSERA_DATABASE_URL = dbPath.startsWith('postgresql:') ? dbPath : `sqlite://${dbPath}`;
  return env;
}

function runOnce(args, env, toolArgs, isTool) {
  // runOnce(args, env) runs tessera; runOnce(tool, toolArgs, env, true) runs another program.
  let file = BIN;
  if (isTool) {
    file = args;
    [args, env] = [env, toolArgs];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
export { sleep };

/**
 * Starts a Tessera server. `envOverrides` uses bare names ({MAILER_AUTOCONFIRM:'false'}) that get
 * the TESSERA_ prefix, or full TESSERA_/GOTRUE_ names passed verbatim; null removes a default.
 * Returns {url, authUrl, anonKey, serviceKey, dbPath, env, logs(), logsSince(n), restart(), stop()}.
 */
export async function startServer(envOverrides = {}, { shareWith } = {}) {
  if (!existsSync(BIN)) {
    throw new Error(`Tessera binary not found at ${BIN} (build it with \`make build\` or set TESSERA_BIN)`);
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-bb-'));
  // shareWith: another server whose database this one uses too (several nodes, one database);
  // the database then belongs to that server, which drops it.
  const shared = shareWith ? { name: null, url: shareWith.dbUrl } : null;
  if (shareWith && shareWith.backend !== 'postgres') throw new Error('shareWith needs PostgreSQL');
  const pgdb = shared ?? (PG ? await createDatabase() : null);
  // dbPath: the SQLite file, or null on PostgreSQL (dbUrl names the database either way).
  const dbPath = pgdb ? null : path.join(dir, 'tessera.db');
  const dbTarget = pgdb ? pgdb.url : dbPath;
  const lines = [];
  let proc;
  try {
    proc = await launch(envOverrides, dbTarget, lines);
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    if (pgdb?.name) await dropDatabase(pgdb.name);
    throw e;
  }
  const audit = { lines, dbPath, pg: pgdb?.name ? { ...PG, name: pgdb.name } : null, pgTool };
  trackServer(audit);
  noteConfigSecrets(envOverrides);

  let stopped = null;
  const server = {
    url: proc.url,
    authUrl: `${proc.url}/auth/v1`,
    anonKey: proc.anonKey,
    serviceKey: proc.serviceKey,
    dbPath,
    dbUrl: pgdb ? pgdb.url : `sqlite://${dbPath}`,
    backend: pgdb ? 'postgres' : 'sqlite',
    env: proc.env,
    logs: () => lines.slice(),
    logCount: () => lines.length,
    logsSince: (n) => lines.slice(n),
    exitInfo: () => proc.exitInfo(),
    /**
     * Stops the process with `signal` and starts a new one on the same database (new port; url,
     * authUrl and keys are updated in place). Resolves the old process's {code, signal, killed}.
     */
    async restart(signal = 'SIGTERM') {
      const info = await proc.terminate(signal);
      lines.push(`---- restart after ${signal}: ${JSON.stringify(info)} ----`);
      proc = await launch(envOverrides, dbTarget, lines);
      server.url = proc.url;
      server.authUrl = `${proc.url}/auth/v1`;
      server.anonKey = proc.anonKey;
      server.serviceKey = proc.serviceKey;
      server.env = proc.env;
      return info;
    },
    /** SIGTERM, wait for exit; resolves {code, signal, killed}. Idempotent. */
    stop() {
      if (stopped) return stopped;
      stopped = (async () => {
        running.delete(server);
        const info = await proc.terminate('SIGTERM');
        try {
          await finishServer(audit);
        } finally {
          await rm(dir, { recursive: true, force: true });
          if (pgdb?.name) await dropDatabase(pgdb.name);
        }
        return info;
      })();
      return stopped;
    },
  };
  running.add(server);
  return server;
}

/** migrate + key show + serve on a free port; retries when the port was taken meanwhile. */
async function launch(envOverrides, dbPath, lines) {
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const env = buildEnv(envOverrides, dbPath, port);
    try {
      return await launchOnce(env, port, lines);
    } catch (e) {
      lastErr = e;
      if (!e.retryable) break;
    }
  }
  throw lastErr;
}

async function launchOnce(env, port, lines) {
  const mig = await runOnce(['migrate'], env);
  // stdout: on a new database, the API keys, printed once by design (like key show).
  noteCliOutput(['migrate', '(stderr)'], mig.stderr);
  if (mig.code !== 0) {
    throw new Error(`tessera migrate failed (code ${mig.code}, signal ${mig.signal}):\n${mig.stdout}\n${mig.stderr}`);
  }
  const keys = await runOnce(['key', 'show', '--json'], env);
  noteCliOutput(['key', 'show', '--json', '(stderr; stdout holds the keys by design)'], keys.stderr);
  if (keys.code !== 0) {
    throw new Error(`tessera key show --json failed (code ${keys.code}):\n${keys.stdout}\n${keys.stderr}`);
  }
  let parsed;
  try {
    parsed = JSON.parse(keys.stdout);
  } catch {
    throw new Error(`tessera key show --json printed no JSON:\n${keys.stdout}\n${keys.stderr}`);
  }
  const { anon_key: anonKey, service_role_key: serviceKey } = parsed;
  if (typeof anonKey !== 'string' || typeof serviceKey !== 'string') {
    throw new Error(`tessera key show --json lacks anon_key/service_role_key: ${keys.stdout}`);
  }

  const firstLine = lines.length;
  const child = WRAPPER.length
    ? spawn(WRAPPER[0], [...WRAPPER.slice(1), BIN, 'serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(BIN, ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const collect = (stream, tag) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        lines.push(tag + buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    stream.on('end', () => {
      if (buf) lines.push(tag + buf);
    });
  };
  collect(child.stdout, '[stdout] ');
  collect(child.stderr, '');
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });

  const url = `http://127.0.0.1:${port}`;
  registerTessera(url);
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  let ready = false;
  while (Date.now() < deadline && !exitInfo) {
    try {
      const res = await fetch(`${url}/health`);
      await res.arrayBuffer();
      if (res.status === 200) {
        ready = true;
        break;
      }
    } catch {
      // not listening yet
    }
    await sleep(25);
  }
  if (!ready) {
    if (!exitInfo) child.kill('SIGKILL');
    await exited;
    const log = lines.slice(firstLine).join('\n');
    const err = new Error(`tessera serve did not become ready on ${url} (exit ${JSON.stringify(exitInfo)}):\n${log}`);
    err.retryable = /address already in use|EADDRINUSE/i.test(log);
    throw err;
  }

  let terminating = null;
  return {
    url,
    env,
    anonKey,
    serviceKey,
    exitInfo: () => exitInfo,
    /** Sends `signal` (SIGKILL after STOP_TIMEOUT_MS); resolves {code, signal, killed}. */
    terminate(signal) {
      if (terminating) return terminating;
      terminating = (async () => {
        let killed = false;
        if (!exitInfo) {
          child.kill(signal);
          const t = setTimeout(() => {
            killed = true;
            child.kill('SIGKILL');
          }, STOP_TIMEOUT_MS);
          await exited;
          clearTimeout(t);
        }
        return { ...exitInfo, killed };
      })();
      return terminating;
    },
  };
}

/**
 * Stops the given servers and asserts a clean shutdown (SIGTERM → exit 0, no crash) and that
 * no response recorded in this test file was a 5xx. Call from after().
 */
export async function finish(...servers) {
  const problems = [];
  for (const s of servers) {
    if (!s) continue;
    const info = await s.stop();
    if (info.killed || info.code !== 0) {
      problems.push(
        `server ${s.url} did not exit cleanly on SIGTERM: ${JSON.stringify(info)}\n` +
          s.logs().slice(-40).join('\n'),
      );
    }
  }
  assertNo5xx();
  assert.deepEqual(problems, [], problems.join('\n\n'));
}

/**
 * node:test's test(), but on failure the server log lines written during the test (for every
 * running server) are printed as diagnostics.
 */
export function test(name, optsOrFn, maybeFn) {
  const fn = typeof optsOrFn === 'function' ? optsOrFn : maybeFn;
  const opts = typeof optsOrFn === 'function' ? {} : optsOrFn;
  return nodeTest(name, { timeout: 60000 * SLOWDOWN, ...opts }, async (t) => {
    const marks = new Map([...running].map((s) => [s, s.logCount()]));
    try {
      await fn(t);
    } catch (e) {
      for (const s of running) {
        const since = s.logsSince(Math.max(0, (marks.get(s) ?? 0) - 5)).slice(-150);
        t.diagnostic(`---- server ${s.url} log (${since.length} lines) ----`);
        for (const l of since) t.diagnostic(l);
        if (s.exitInfo()) t.diagnostic(`server exited: ${JSON.stringify(s.exitInfo())}`);
      }
      throw e;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Clients

let clientSeq = 0;
const memoryStorage = () => {
  const m = new Map();
  return {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => void m.set(k, v),
    removeItem: (k) => void m.delete(k),
  };
};

/**
 * A GoTrueClient against the server. opts: {key:'anon'|'service'|<jwt>, url, fetch, ...}.
 * Its admin API (client.admin) uses the same Authorization header.
 */
export function makeClient(server, opts = {}) {
  const { key = 'anon', url = server.url, fetch: f = trackedFetch, ...rest } = opts;
  const k = key === 'anon' ? server.anonKey : key === 'service' ? server.serviceKey : key;
  return new GoTrueClient({
    url,
    headers: { apikey: k, Authorization: `Bearer ${k}` },
    storage: memoryStorage(),
    storageKey: `sb-blackbox-${process.pid}-${++clientSeq}`,
    persistSession: false,
    autoRefreshToken: false,
    detectSessionInUrl: false,
    fetch: f,
    ...rest,
  });
}

/** A GoTrueClient authorised with the service_role key (use .admin). */
export function adminClient(server, opts = {}) {
  return makeClient(server, { key: 'service', ...opts });
}

let emailSeq = 0;
export function uniqueEmail(prefix = 'user') {
  return `${prefix}-${++emailSeq}-${randomBytes(4).toString('hex')}@example.com`;
}

/** Signs up (autoconfirm must be on) and returns {client, session, user, email, password}. */
export async function newUser(server, { prefix = 'user', password = 'correct-horse-1', data, url } = {}) {
  const email = uniqueEmail(prefix);
  const client = makeClient(server, url ? { url } : {});
  const { data: d, error } = await client.signUp({ email, password, options: data ? { data } : {} });
  assert.equal(error, null, `signUp failed: ${error?.message} (${error?.code})`);
  assert.ok(d.session, 'signUp returned no session (is MAILER_AUTOCONFIRM on?)');
  return { client, session: d.session, user: d.user, email, password };
}

/** Signs in an existing user with a fresh client; returns {client, session}. */
export async function signIn(server, email, password, opts = {}) {
  const client = makeClient(server, opts);
  const { data, error } = await client.signInWithPassword({ email, password });
  assert.equal(error, null, `signInWithPassword failed: ${error?.message} (${error?.code})`);
  return { client, session: data.session };
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/**
 * Raw request through fetch. opts: {body (JSON-encoded), rawBody (string/Buffer, sent as is),
 * token (Bearer), auth (full Authorization value or null for none), apikey (default anon; null
 * for none), version (send X-Supabase-Api-Version: 2024-01-01, default true), headers, base
 * (default server.url)}. Returns {status, headers, text, body (parsed JSON or undefined)}.
 */
export async function api(server, method, pathname, opts = {}) {
  const {
    body,
    rawBody,
    token,
    auth,
    apikey = server.anonKey,
    version = true,
    headers = {},
    base = server.url,
  } = opts;
  const h = {};
  if (apikey) h.apikey = apikey;
  if (token) h.Authorization = `Bearer ${token}`;
  if (auth) h.Authorization = auth;
  if (version) h['X-Supabase-Api-Version'] = '2024-01-01';
  let payload;
  if (body !== undefined) {
    h['Content-Type'] = 'application/json;charset=UTF-8';
    payload = JSON.stringify(body);
  } else if (rawBody !== undefined) {
    payload = rawBody;
  }
  Object.assign(h, headers);
  const res = await trackedFetch(base + pathname, { method, headers: h, body: payload });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

/**
 * Raw request through node:http, for bodies that fetch cannot send the way we want (oversized,
 * chunked). Resolves on the response even if the server stops reading the body early.
 * Returns {status, headers, text, body}.
 */
export function rawHttp(server, method, pathname, { headers = {}, body, chunks } = {}) {
  const u = new URL(server.url + pathname);
  return new Promise((resolve, reject) => {
    let settled = false;
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers, agent: false },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          settled = true;
          record(method, u.href, res.statusCode);
          noteExchange({ url: u.href, method, headers, body: chunks ? undefined : body, status: res.statusCode, text });
          let parsed;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode, headers: res.headers, text, body: parsed });
        });
        res.on('error', (e) => {
          if (!settled) reject(e);
        });
      },
    );
    req.on('error', (e) => {
      // EPIPE/ECONNRESET while still writing is expected when the server answers early; only
      // fail if no response ever arrives.
      setTimeout(() => {
        if (!settled) reject(e);
      }, 2000);
    });
    if (chunks) {
      (async () => {
        for (const c of chunks) {
          if (req.destroyed) return;
          if (!req.write(c)) {
            await new Promise((r) => {
              const done = () => {
                req.off('drain', done);
                req.off('close', done);
                r();
              };
              req.on('drain', done);
              req.on('close', done);
            });
          }
        }
        req.end();
      })().catch(() => {});
    } else {
      req.end(body);
    }
  });
}

/** Asserts an error response in the 2024-01-01 shape. */
export function assertApiError(res, status, code) {
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status} ${res.text}`);
  assert.ok(res.body && typeof res.body === 'object', `error body is not JSON: ${res.text}`);
  if (code !== undefined) {
    assert.equal(res.body.code, code, `error code: ${res.text}`);
  }
  assert.equal(typeof res.body.message, 'string', `error message: ${res.text}`);
}

/** Asserts an auth-js error object (AuthApiError etc.) has the given status and code. */
export function assertAuthError(error, status, code) {
  assert.ok(error, `expected an error ${status} ${code}, got none`);
  assert.equal(error.code, code, `error code (status ${error.status}, message ${error.message})`);
  assert.equal(error.status, status, `error status (code ${error.code}, message ${error.message})`);
}

/** GET /user with a bearer token; returns the raw response. */
export function getUserRaw(server, token, opts = {}) {
  return api(server, 'GET', '/user', { token, ...opts });
}

/** POST /token?grant_type=refresh_token raw. */
export function refreshRaw(server, refreshToken, opts = {}) {
  return api(server, 'POST', '/token?grant_type=refresh_token', {
    body: { refresh_token: refreshToken },
    ...opts,
  });
}

/** POST /token?grant_type=password raw. */
export function passwordRaw(server, email, password, opts = {}) {
  return api(server, 'POST', '/token?grant_type=password', {
    body: { email, password, gotrue_meta_security: {} },
    ...opts,
  });
}

export function decodePart(jwt, i) {
  return JSON.parse(Buffer.from(jwt.split('.')[i], 'base64url').toString('utf8'));
}
export const jwtHeader = (jwt) => decodePart(jwt, 0);
export const jwtPayload = (jwt) => decodePart(jwt, 1);

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
