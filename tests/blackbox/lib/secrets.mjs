// The recording half of the secrets audit (issue 7, "Secrets hygiene"); tests/blackbox/
// secrets-audit.mjs is the checking half. Off unless TESSERA_TEST_SECRETS_DIR names a folder.
//
// When on, every black-box test process writes into that folder:
//   secrets-<pid>.jsonl  each secret the suite sent to or received from a server, once:
//                        {kind, value, where}. Kinds: password (password, new_password,
//                        current_password, credentials.password), refresh_token, access_token
//                        (JWTs in a field, an Authorization header or apikey), token_secret
//                        (tst_…), key_secret (tsk_…), client_secret, provider_token (an outside
//                        IdP's id_token, a subject_token, provider_token), bearer (any other
//                        Authorization value), config_secret (a *SECRET / *_KEY / *PASSWORD
//                        setting a test gave a server).
//   errors-<pid>.jsonl   the body of every response with status >= 400 from a Tessera server,
//                        with the short secrets (under MIN_SECRET_LEN) its request carried.
//   logs/<pid>-<n>.log   every line a server wrote on stdout/stderr over its whole life
//                        (restarts included); logs/<pid>-cli.log: the stderr of the CLI runs made
//                        here and in v1.mjs cli() (their stdout may print a secret by design).
//   db/<pid>-<n>.sqlite(+-wal) or db/<pid>-<n>.pgdump   each server's database when it stops:
//                        the SQLite file as is (free pages, so rows written then deleted, too)
//                        or a pg_dump of its PostgreSQL database.
//
// How requests are seen: globalThis.fetch is wrapped (so @supabase/auth-js, trackedFetch, the
// /v1 helpers, idp.mjs and every bare fetch() in a test go through it); rawHttp (node:http)
// calls noteExchange itself. Raw sockets (robustness.test.mjs) carry no secret.

import { appendFileSync, copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const DIR = process.env.TESSERA_TEST_SECRETS_DIR ? path.resolve(process.env.TESSERA_TEST_SECRETS_DIR) : null;
export const auditOn = DIR !== null;

// Shorter values are too common to grep for bare (secrets-audit.mjs explains what it does with
// them instead); they are recorded all the same.
export const MIN_SECRET_LEN = 8;

const where = path.basename(process.argv[1] ?? 'unknown');
const seenSecrets = new Set();
const tesseraOrigins = new Set();
let serverSeq = 0;

if (auditOn) {
  mkdirSync(path.join(DIR, 'logs'), { recursive: true });
  mkdirSync(path.join(DIR, 'db'), { recursive: true });
}

function out(name) {
  return path.join(DIR, name.replace('%p', String(process.pid)));
}

/** Records one secret (any string; empty ones are dropped). */
export function noteSecret(kind, value) {
  if (!auditOn || typeof value !== 'string' || value === '') return;
  const id = `${kind}\0${value}`;
  if (seenSecrets.has(id)) return;
  seenSecrets.add(id);
  appendFileSync(out('secrets-%p.jsonl'), `${JSON.stringify({ kind, value, where })}\n`);
}

const JWT_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const TESSERA_SECRET_RE = /\bts([tk])_[A-Za-z0-9_-]{32}(?![A-Za-z0-9_-])/g;

// Members whose string value is a secret, by name. `secret` is a token's or key's (tst_/tsk_).
const FIELD_KIND = {
  password: 'password',
  new_password: 'password',
  current_password: 'password',
  refresh_token: 'refresh_token',
  access_token: 'access_token',
  provider_token: 'provider_token',
  provider_refresh_token: 'provider_token',
  id_token: 'provider_token',
  subject_token: 'provider_token',
  client_secret: 'client_secret',
  secret: 'secret',
};
// Stored user content, kept and returned in clear by design: a `password` member inside is data,
// not a credential (documents' data, GoTrue's user_metadata / app_metadata / signup data).
const CONTENT_MEMBERS = new Set(['data', 'user_metadata', 'app_metadata', 'raw_user_meta_data', 'raw_app_meta_data']);

function kindOf(field, value) {
  let kind = FIELD_KIND[field];
  if (!kind) return null;
  if (kind === 'secret' || kind === 'access_token') {
    if (value.startsWith('tst_')) return 'token_secret';
    if (value.startsWith('tsk_')) return 'key_secret';
    if (JWT_RE.test(value)) return 'access_token';
  }
  if (kind === 'secret') kind = 'client_secret';
  return kind;
}

function collectJson(v, depth = 0) {
  if (depth > 64 || v === null || typeof v !== 'object') return;
  if (Array.isArray(v)) {
    for (const x of v) collectJson(x, depth + 1);
    return;
  }
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'string') {
      const kind = kindOf(k, x);
      if (kind) noteSecret(kind, x);
    } else if (!CONTENT_MEMBERS.has(k)) {
      collectJson(x, depth + 1);
    }
  }
}

// Bodies above this are test padding (size limits), not credentials: not parsed.
const MAX_PARSED_BODY = 1 << 20;

/** Records the secrets in a request or response body (JSON or a form), and any tst_/tsk_ text. */
function collectBody(text, contentType = '') {
  if (typeof text !== 'string' || text === '' || text.length > MAX_PARSED_BODY) return;
  for (const m of text.matchAll(TESSERA_SECRET_RE)) noteSecret(m[1] === 't' ? 'token_secret' : 'key_secret', m[0]);
  const t = text.trimStart();
  if (t.startsWith('{') || t.startsWith('[')) {
    try {
      collectJson(JSON.parse(text));
    } catch {
      // not JSON after all: nothing more to read
    }
  } else if (/x-www-form-urlencoded/i.test(contentType) || /^[\w.~%+-]+=[^&]*(&|$)/.test(t)) {
    try {
      for (const [k, v] of new URLSearchParams(text)) {
        const kind = kindOf(k, v);
        if (kind) noteSecret(kind, v);
      }
    } catch {
      // not a form
    }
  }
}

function headerSecrets(get) {
  const auth = get('authorization');
  if (auth) {
    const m = /^\s*(\S+)\s+(.*)$/.exec(auth);
    const value = m ? m[2].trim() : auth.trim();
    noteSecret(classify(value), value);
    if (m && /^basic$/i.test(m[1])) {
      const plain = Buffer.from(value, 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      if (colon >= 0) noteSecret('client_secret', plain.slice(colon + 1));
    }
  }
  const apikey = get('apikey');
  if (apikey) noteSecret(classify(apikey), apikey);
}

function classify(value) {
  if (value.startsWith('tst_')) return 'token_secret';
  if (value.startsWith('tsk_')) return 'key_secret';
  return JWT_RE.test(value) ? 'access_token' : 'bearer';
}

function bodyText(body) {
  if (body === undefined || body === null) return '';
  if (typeof body === 'string') return body;
  if (body instanceof URLSearchParams) return body.toString();
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) return body.length > MAX_PARSED_BODY ? '' : Buffer.from(body).toString('utf8');
  if (body instanceof ArrayBuffer) return body.byteLength > MAX_PARSED_BODY ? '' : Buffer.from(body).toString('utf8');
  return ''; // streams, Blobs, FormData: the suite sends none with a secret
}

/** A server's base URL: its error bodies are recorded (other servers' — IdPs, nginx — are not). */
export function registerTessera(url) {
  if (auditOn) tesseraOrigins.add(new URL(url).origin);
}

/**
 * One request and its response, seen by a helper that does not go through fetch (rawHttp).
 * headers: a plain object or Headers; body: what was sent.
 */
export function noteExchange({ url, method = 'GET', headers = {}, body, contentType, status, text }) {
  if (!auditOn) return;
  // A lookup that takes what a test sent as is (new Headers() would refuse odd names or values).
  const plain = new Map();
  if (headers instanceof Headers) headers.forEach((v, k) => plain.set(k, v));
  else for (const [k, v] of Object.entries(headers)) plain.set(k.toLowerCase(), Array.isArray(v) ? v.join(', ') : String(v));
  const h = { get: (n) => plain.get(n) ?? null };
  headerSecrets(h.get);
  const reqText = bodyText(body);
  collectBody(reqText, contentType ?? h.get('content-type') ?? '');
  // The short secrets this request carried: its 4xx must not quote them back either.
  const carriedShort = shortSecretsIn(reqText, h);
  if (typeof text === 'string') {
    collectBody(text);
    let origin = null;
    try {
      origin = new URL(url).origin;
    } catch {
      // not a URL
    }
    if (status >= 400 && tesseraOrigins.has(origin)) {
      const entry = { status, method, url: String(url), body: text, carried: [...new Set(carriedShort)], where };
      appendFileSync(out('errors-%p.jsonl'), `${JSON.stringify(entry)}\n`);
    }
  }
}

// The short secret values a request carries (header and body members, as collectBody reads them).
function shortSecretsIn(text, h) {
  const found = [];
  const take = (k, v) => {
    if (typeof v === 'string' && v !== '' && v.length < MIN_SECRET_LEN && kindOf(k, v)) found.push(v);
  };
  const auth = h.get('authorization');
  if (auth) {
    const v = auth.replace(/^\s*\S+\s+/, '').trim();
    if (v && v.length < MIN_SECRET_LEN) found.push(v);
  }
  if (!text || text.length > MAX_PARSED_BODY) return found;
  const walk = (v, depth = 0) => {
    if (depth > 64 || v === null || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v)) {
      if (typeof x === 'string') take(k, x);
      else if (!CONTENT_MEMBERS.has(k)) walk(x, depth + 1);
    }
  };
  try {
    walk(JSON.parse(text));
  } catch {
    try {
      for (const [k, v] of new URLSearchParams(text)) take(k, v);
    } catch {
      // neither
    }
  }
  return found;
}

if (auditOn) {
  const realFetch = globalThis.fetch;
  globalThis.fetch = async function auditedFetch(input, init = {}) {
    const isReq = typeof input === 'object' && input !== null && typeof input.url === 'string' && 'headers' in input;
    const url = isReq ? input.url : String(input);
    const method = init.method ?? (isReq ? input.method : 'GET');
    let body = init.body;
    if (body === undefined && isReq && input.body) body = await input.clone().text();
    const res = await realFetch(input, init);
    // After the request went out: headers fetch accepted are ones Headers accepts.
    const headers = new Headers(init.headers ?? (isReq ? input.headers : undefined));
    let text;
    try {
      text = await res.clone().text();
    } catch {
      text = undefined; // the body was cut short: the test sees the same error
    }
    noteExchange({ url, method, headers, body, status: res.status, text });
    return res;
  };
}

/** Values of the settings a test gave a server that name a secret. */
export function noteConfigSecrets(envOverrides) {
  if (!auditOn) return;
  for (const [k, v] of Object.entries(envOverrides)) {
    if (v !== null && v !== undefined && /(SECRET|_KEY|PASSWORD)$/.test(k)) noteSecret('config_secret', String(v));
  }
}

/** Output of a CLI run that prints no secret by design (its stderr always qualifies). */
export function noteCliOutput(args, text) {
  if (!auditOn || !text) return;
  appendFileSync(out('logs/%p-cli.log'), `---- tessera ${args.join(' ')}\n${text}\n`);
}

// ---------------------------------------------------------------------------------------------
// Server logs and database snapshots

const tracked = new Set();

/**
 * Starts auditing a server: `s` = {lines (its log, appended to over its life), dbPath (its SQLite
 * file) or pg ({host, port, name}: the PostgreSQL database it owns; both null for a node that
 * shares another's), pgTool(tool, args)}.
 */
export function trackServer(s) {
  if (!auditOn) return;
  s.seq = ++serverSeq;
  tracked.add(s);
}

function names(s) {
  const base = `${process.pid}-${s.seq}`;
  return { log: out(`logs/${base}.log`), db: out(`db/${base}`) };
}

/** At a server's stop, before its files or database are removed: its log and a snapshot. */
export async function finishServer(s) {
  if (!auditOn || !tracked.has(s)) return;
  tracked.delete(s);
  const n = names(s);
  await writeFile(n.log, s.lines.join('\n') + '\n');
  if (s.dbPath) {
    await copyFile(s.dbPath, `${n.db}.sqlite`);
    if (existsSync(`${s.dbPath}-wal`)) await copyFile(`${s.dbPath}-wal`, `${n.db}.sqlite-wal`);
  } else if (s.pg) {
    const r = await s.pgTool('pg_dump', ['--no-owner', '-f', `${n.db}.pgdump`, s.pg.name]);
    if (r.code !== 0) throw new Error(`pg_dump ${s.pg.name} failed: ${r.stderr}`);
  }
}

// A server a test left running: its log and snapshot at exit (synchronously, the only way left).
if (auditOn) {
  process.on('exit', () => {
    for (const s of tracked) {
      const n = names(s);
      try {
        writeFileSync(n.log, s.lines.join('\n') + '\n');
        if (s.dbPath && existsSync(s.dbPath)) {
          copyFileSync(s.dbPath, `${n.db}.sqlite`);
          if (existsSync(`${s.dbPath}-wal`)) copyFileSync(`${s.dbPath}-wal`, `${n.db}.sqlite-wal`);
        } else if (s.pg) {
          spawnSync('pg_dump', ['-h', s.pg.host, '-p', s.pg.port, '-U', 'postgres', '--no-owner', '-f', `${n.db}.pgdump`, s.pg.name]);
        }
      } catch {
        // best effort at exit; the checker's counts catch a run that lost them all
      }
    }
  });
}
