// Helpers for the black-box tests of the native API (/v1, docs/API.md "Native API"): raw
// requests with a secret, the error shapes, keys made with the bootstrap credential, and a look
// into the database (SQLite file or PostgreSQL) for what the API must never show.
//
// Every request goes through trackedFetch, so finish() sees its status (no 5xx, ever).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { BIN, PG, trackedFetch, sleep } from './server.mjs';
import { noteCliOutput } from './secrets.mjs';

export const UNAUTHORIZED = {
  error: { code: 'unauthorized', message: 'Invalid or expired credentials' },
};
export const INVALID_CREDENTIALS = {
  error: { code: 'invalid_credentials', message: 'Invalid login credentials' },
};
export const TST_RE = /^tst_[A-Za-z0-9_-]{32}$/;
export const TSK_RE = /^tsk_[A-Za-z0-9_-]{32}$/;
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// "RFC 3339 UTC with microseconds"
export const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/** A fresh name valid for collections and indexes. */
export function uniqueName(prefix = 'c') {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/**
 * One /v1 request. opts: {as (secret sent as Bearer), apikey (sent as the apikey header), auth
 * (the whole Authorization value), body (JSON-encoded), rawBody (sent as is), headers}.
 * Returns {status, headers, text, body, req} where req describes the request for messages.
 */
export async function v1(server, method, path, opts = {}) {
  const { as, apikey, auth, body, rawBody, headers = {} } = opts;
  const h = {};
  if (as) h.Authorization = `Bearer ${as}`;
  if (auth !== undefined) h.Authorization = auth;
  if (apikey) h.apikey = apikey;
  let payload;
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  } else if (rawBody !== undefined) {
    h['Content-Type'] = 'application/json';
    payload = rawBody;
  }
  Object.assign(h, headers);
  const res = await trackedFetch(server.url + path, { method, headers: h, body: payload });
  const text = await res.text();
  let parsed;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  const shown = payload === undefined ? '' : ` ${String(payload).slice(0, 300)}`;
  return {
    status: res.status,
    headers: res.headers,
    text,
    body: parsed,
    req: `${method} ${path}${shown}`,
  };
}

/** A caller bound to one secret (null/undefined: no credential at all). */
export function caller(server, secret, extra = {}) {
  const call = (method, path, body, opts = {}) => v1(server, method, path, { as: secret, body, ...extra, ...opts });
  return {
    secret,
    get: (p, o) => call('GET', p, undefined, o),
    post: (p, b, o) => call('POST', p, b, o),
    put: (p, b, o) => call('PUT', p, b, o),
    patch: (p, b, o) => call('PATCH', p, b, o),
    del: (p, o) => call('DELETE', p, undefined, o),
  };
}

function describe(res) {
  return `${res.req} → ${res.status} ${res.text.slice(0, 600)}`;
}

/** Asserts the status and returns the parsed body. */
export function expect(res, status) {
  assert.equal(res.status, status, describe(res));
  return res.body;
}

/** Asserts a /v1 error: the status, {"error":{"code","message"}} and nothing else, JSON. */
export function assertV1Error(res, status, code) {
  assert.equal(res.status, status, `expected ${status} ${code}: ${describe(res)}`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, `content-type: ${describe(res)}`);
  assert.ok(res.body && typeof res.body === 'object', `error body is not JSON: ${describe(res)}`);
  // Only `error`; a weak_password answer may add GoTrue's {"weak_password":{"reasons"}} detail.
  const extra = Object.keys(res.body).filter((k) => k !== 'error' && !(code === 'weak_password' && k === 'weak_password'));
  assert.deepEqual(extra, [], `error body shape: ${describe(res)}`);
  assert.ok(res.body.error && typeof res.body.error === 'object', `error body shape: ${describe(res)}`);
  assert.equal(res.body.error.code, code, `error code: ${describe(res)}`);
  assert.equal(typeof res.body.error.message, 'string', `error message: ${describe(res)}`);
  assert.ok(res.body.error.message.length > 0, `empty error message: ${describe(res)}`);
}

/** The uniform 401 of a presented secret that fails any check. */
export function assertUnauthorized(res) {
  assert.equal(res.status, 401, `expected the uniform 401: ${describe(res)}`);
  assert.deepEqual(res.body, UNAUTHORIZED, `401 body: ${describe(res)}`);
  assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer\b/, `WWW-Authenticate: ${describe(res)}`);
}

export function assertForbidden(res) {
  assertV1Error(res, 403, 'forbidden');
}

/** The 400 of a failed login, identical whatever the reason. */
export function assertInvalidCredentials(res) {
  assert.equal(res.status, 400, `expected 400 invalid_credentials: ${describe(res)}`);
  assert.deepEqual(res.body, INVALID_CREDENTIALS, `failed-login body: ${describe(res)}`);
}

/** Milliseconds since the epoch of an RFC 3339 time of the /v1 shape (asserted). */
export function timeMs(s, what = 'time') {
  assert.equal(typeof s, 'string', `${what} is not a string: ${JSON.stringify(s)}`);
  assert.match(s, TIME_RE, `${what} is not RFC 3339 UTC with microseconds: ${s}`);
  return Date.parse(s);
}

/** Asserts that an RFC 3339 time lies within slackMs of expectedMs. */
export function assertNear(s, expectedMs, slackMs, what = 'time') {
  const t = timeMs(s, what);
  assert.ok(
    Math.abs(t - expectedMs) <= slackMs,
    `${what} ${s} is ${Math.round((t - expectedMs) / 1000)} s away from ${new Date(expectedMs).toISOString()}`,
  );
}

/** Creates a key with the bootstrap credential (the service_role JWT). Returns the Key. */
export async function bootstrapKey(server, role, extra = {}) {
  const res = await v1(server, 'POST', '/v1/keys', { as: server.serviceKey, body: { role, ...extra } });
  assert.equal(res.status, 201, `creating a ${role} key: ${describe(res)}`);
  assert.ok(res.body?.key?.secret, `no key secret: ${res.text}`);
  return res.body.key;
}

/**
 * An admin tsk_ key made with the service_role JWT, then server, server-readonly and client keys
 * made with that admin key. Returns {admin, server, readonly, client} callers (each with .key).
 */
export async function setupKeys(server) {
  const adminKey = await bootstrapKey(server, 'admin', { description: 'black-box admin' });
  const admin = caller(server, adminKey.secret);
  const out = { admin: Object.assign(admin, { key: adminKey }) };
  for (const [name, role] of [
    ['server', 'server'],
    ['readonly', 'server-readonly'],
    ['client', 'client'],
  ]) {
    const res = await admin.post('/v1/keys', { role });
    assert.equal(res.status, 201, describe(res));
    out[name] = Object.assign(caller(server, res.body.key.secret), { key: res.body.key });
  }
  return out;
}

export async function createCollection(admin, name = uniqueName('coll')) {
  const res = await admin.post('/v1/collections', { name });
  assert.equal(res.status, 201, describe(res));
  return name;
}

/** Creates a document; returns the Document. */
export async function createDoc(who, collection, body) {
  const res = await who.post(`/v1/collections/${collection}/documents`, body);
  assert.equal(res.status, 201, describe(res));
  return res.body;
}

/** Logs in (as anonymous unless `who` is given); asserts 200 and returns the Token. */
export async function login(server, body, who) {
  const res = who ? await who.post('/v1/login', body) : await v1(server, 'POST', '/v1/login', { body });
  assert.equal(res.status, 200, `login: ${describe(res)}`);
  assert.ok(res.body?.token?.secret, `login gave no secret: ${res.text}`);
  return res.body.token;
}

/** Polls fn until it returns truthy or ms pass; returns the last value. */
export async function eventually(fn, ms, step = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > deadline) return v;
    await sleep(step);
  }
}

/** Follows ?after= cursors through a list; returns every item and the pages' sizes. */
export async function listAll(who, path, size) {
  const items = [];
  const pages = [];
  let after;
  for (let i = 0; i < 10000; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const q = `${path}${sep}size=${size}${after !== undefined ? `&after=${encodeURIComponent(after)}` : ''}`;
    const res = await who.get(q);
    assert.equal(res.status, 200, describe(res));
    assert.ok(Array.isArray(res.body?.data), `no data array: ${describe(res)}`);
    assert.ok(res.body.data.length <= size, `page larger than size ${size}: ${describe(res)}`);
    items.push(...res.body.data);
    pages.push(res.body.data.length);
    if (res.body.after === undefined) return { items, pages };
    assert.equal(typeof res.body.after, 'string', `after is not a string: ${describe(res)}`);
    after = res.body.after;
  }
  throw new Error('pagination did not end');
}

/** Runs the tessera CLI with the server's environment. */
export function cli(server, args) {
  const r = spawnSync(BIN, args, { env: server.env, input: '', encoding: 'utf8', timeout: 60000 });
  // Its stderr is log output, audited for secrets; its stdout may print a new secret by design.
  noteCliOutput(args, r.stderr);
  return { code: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}

/**
 * Runs SQL against the server's database (sqlite3 on the SQLite file; psql on PostgreSQL) and
 * returns the output's lines (one row a line, columns separated by |).
 */
export function dbQuery(server, sql) {
  const r =
    server.backend === 'sqlite'
      ? spawnSync('sqlite3', ['-batch', '-noheader', '-cmd', '.timeout 5000', server.dbPath, sql], { encoding: 'utf8' })
      : spawnSync('psql', ['-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', server.dbUrl, '-c', sql], {
          encoding: 'utf8',
          env: {
            ...process.env,
            PGOPTIONS: `-c search_path=${server.env.TESSERA_DATABASE_SCHEMA ?? 'tessera'}`,
          },
        });
  assert.equal(r.status, 0, `query failed (${server.backend}): ${sql}\n${r.stderr}`);
  return r.stdout.split('\n').filter((l) => l !== '');
}

/** Microseconds since the epoch, now (for comparisons with the database's integer times). */
export const nowUs = () => Date.now() * 1000;
