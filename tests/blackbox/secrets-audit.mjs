#!/usr/bin/env node
// The checking half of the secrets audit (issue 7, "Secrets hygiene"): after a black-box run with
// TESSERA_TEST_SECRETS_DIR=DIR (lib/secrets.mjs recorded into DIR), greps every server log line,
// every error body of a Tessera server and every database snapshot for every secret the suite
// sent or received, as is and in the encodings a leak would take. Any hit fails, listed with its
// file and context; a secret is only ever shown by a prefix and its length.
//
//   node tests/blackbox/secrets-audit.mjs DIR [--bin PATH] [--log FILE]... [--scale F]
//        [--min-witness-pct P]
//
// --log adds a log written beside the suite, e.g. the PostgreSQL server's (its errors quote
// statements and key values: a secret there came from Tessera's SQL).
//
// It cannot pass on nothing: the minimum counts (MINIMA, for the whole suite on either backend,
// about half of what a full run records; --scale 0.05 for a few test files) fail a run that
// recorded too few secrets of a kind, snapshots, logs or error bodies; the scanner finds a planted secret in every
// encoding before it reads a file; and the snapshots must hold the SHA-256 (the form Tessera
// stores) of at least P % of the recorded refresh tokens, token and key secrets, which proves the
// snapshots are the databases those secrets went to.
//
// What is searched, and what is not (why each exclusion is safe):
// - Each secret of MIN_LEN (8) characters or more: as is, JSON-escaped (also with "\/"), URL-
//   and form-encoded, hex (lower and upper case: SQLite blobs, PostgreSQL bytea), and base64 /
//   base64url at each of the three byte alignments (a secret inside a longer encoded text, e.g. a
//   Basic header or a JWT claim). Everywhere: logs, error bodies, snapshots (SQLite files are read
//   as bytes, so free pages count: a row written and later deleted is still a hit).
// - Shorter secrets (the suite's weak passwords "x", "abc", "12345", …) would match everywhere
//   bare. They are searched where a leak would put them: after a label (password, secret, token,
//   apikey, authorization followed by : or =, quoted or not) in logs, error bodies and PostgreSQL
//   dumps; and each error body is checked for the short secrets its own request carried, quoted.
//   Bare, in a database, they are not searched: they are refused (422 weak_password) before
//   anything is stored, and the path that would store a password in clear is the one every long
//   password of the suite takes too.
// - A JWT (access tokens, the anon and service_role keys, outside IdPs' tokens) is searched
//   whole, and its signature alone: the header and the claims are public (anyone holding the
//   token reads them; Tessera stores and logs claims such as the subject by design) and do not
//   let anyone use the token without the signature.
// - A secret that also occurs in the server binary (--bin) is left out and listed: finding it
//   says nothing about input leaking (a test value that is also a message text, say).
// - A secret of fewer than MIN_DISTINCT (4) distinct characters is left out and listed: such
//   values are a test's filler ("x" × 20 as a refresh token, "A" × 200 KiB as a bearer), never
//   one the server issued or a password it accepted, and they match any run of their character
//   (a limits test's identity "xxx…" in a rate-limit bucket's key, for one).
// - Secrets are only collected outside stored user content (documents' data, user_metadata,
//   app_metadata): a member named password there is data, kept and returned by design.
// - Not audited: the stdout of CLI commands that print a secret by design (key show, key
//   create, and migrate on a new database, which prints the anon and service_role keys once);
//   the logs of servers other than Tessera (nginx, the test IdP); the output of CLI runs a test
//   makes with its own spawnSync (cli.test.mjs, import.test.mjs, cluster.test.mjs). A server's
//   stdout is audited like its stderr: deployed, both end up in the same log.

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const MIN_LEN = 8;
// About half of the least that a run of the whole suite recorded (3 runs, 2026-11, SQLite and
// PostgreSQL): passwords 60-70, refresh tokens 1685-2904, access tokens 2106-3306, token secrets
// 523-1840, key secrets 127-143, provider tokens 25; snapshots 48-66, server logs 48-70, error
// bodies 1691-1839.
const MINIMA = {
  secrets: { password: 30, refresh_token: 800, access_token: 1000, token_secret: 250, key_secret: 60, provider_token: 12 },
  snapshots: 24,
  logs: 24,
  errors: 800,
};
const MIN_DISTINCT = 4;
const MAX_SHOWN_HITS = 200;

// ---------------------------------------------------------------------------------------------
// Arguments

function parseArgs(argv) {
  const opts = {
    dir: null,
    bin: null,
    extraLogs: [],
    scale: 1,
    minWitnessPct: 50,
  };
  const num = (v, name) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: not a number: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--bin') opts.bin = next();
    else if (a === '--log') opts.extraLogs.push(next());
    else if (a === '--scale') opts.scale = num(next(), a);
    else if (a === '--min-witness-pct') opts.minWitnessPct = num(next(), a);
    else if (!a.startsWith('--') && opts.dir === null) opts.dir = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.dir) throw new Error('usage: secrets-audit.mjs DIR [--bin PATH] [--log FILE]... [--scale F]');
  return opts;
}

// ---------------------------------------------------------------------------------------------
// Loading what was recorded

function readJsonl(file) {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l));
}

function listFiles(dir) {
  return existsSync(dir) ? readdirSync(dir).map((f) => path.join(dir, f)) : [];
}

function loadRecord(dir) {
  const secrets = new Map(); // value → {kinds:Set, where:Set}
  const errors = [];
  for (const f of listFiles(dir)) {
    const base = path.basename(f);
    if (/^secrets-\d+\.jsonl$/.test(base)) {
      for (const { kind, value, where } of readJsonl(f)) {
        const e = secrets.get(value) ?? { kinds: new Set(), where: new Set() };
        e.kinds.add(kind);
        e.where.add(where);
        secrets.set(value, e);
      }
    } else if (/^errors-\d+\.jsonl$/.test(base)) {
      readJsonl(f).forEach((e, i) => errors.push({ ...e, file: `${base}:${i + 1}` }));
    }
  }
  const logs = listFiles(path.join(dir, 'logs')).filter((f) => f.endsWith('.log'));
  const snapshots = listFiles(path.join(dir, 'db')).filter((f) => /\.(sqlite|sqlite-wal|pgdump)$/.test(f));
  return { secrets, errors, logs, snapshots };
}

// ---------------------------------------------------------------------------------------------
// Encodings: each one a string of the bytes a leak would write, as latin1 (one char per byte), so
// that text and binary files are searched alike.

const latin1 = (s) => Buffer.from(s, 'utf8').toString('latin1');

function base64Middles(bytes) {
  // The part of base64(prefix + secret) that does not depend on the neighbouring bytes, for each
  // of the three alignments: whole groups of 4 characters lying inside the secret.
  const out = [];
  for (let k = 0; k < 3; k++) {
    const b = Buffer.concat([Buffer.alloc(k), bytes]);
    const full = Math.floor(b.length / 3) * 4;
    const text = b.toString('base64').slice(k === 0 ? 0 : 4, full);
    out.push(text, text.replace(/\+/g, '-').replace(/\//g, '_'));
  }
  return out;
}

function encodingsOf(value) {
  const bytes = Buffer.from(value, 'utf8');
  const json = JSON.stringify(value).slice(1, -1);
  const forms = new Map([
    ['as is', value],
    ['JSON-escaped', json],
    ['JSON-escaped (\\/)', json.replace(/\//g, '\\/')],
    ['URL-encoded', encodeURIComponent(value)],
    ['form-encoded', encodeURIComponent(value).replace(/%20/g, '+')],
    ['hex', bytes.toString('hex')],
    ['HEX', bytes.toString('hex').toUpperCase()],
  ]);
  base64Middles(bytes).forEach((b, i) => forms.set(`base64${i % 2 ? 'url' : ''} (alignment ${i >> 1})`, b));
  const out = [];
  const seen = new Set();
  for (const [name, text] of forms) {
    if (name !== 'as is' && (text === value || seen.has(text))) continue;
    if (text.length < MIN_LEN) continue;
    seen.add(text);
    out.push({ name, text: name === 'as is' || name.startsWith('JSON') || name.endsWith('encoded') ? latin1(text) : text });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// A multi-pattern scanner: a bitmap of every pattern's first 3 bytes, then a map of first 8.

class Scanner {
  constructor() {
    this.first3 = new Uint8Array(1 << 24);
    this.byPrefix = new Map();
  }

  add(text, tag) {
    if (text.length < MIN_LEN) throw new Error('pattern too short');
    this.first3[(text.charCodeAt(0) << 16) | (text.charCodeAt(1) << 8) | text.charCodeAt(2)] = 1;
    const key = text.slice(0, MIN_LEN);
    const list = this.byPrefix.get(key) ?? [];
    list.push({ text, tag });
    this.byPrefix.set(key, list);
  }

  /** Calls onHit(tag, offset, length) for every occurrence in s (a latin1 string). */
  scan(s, onHit) {
    const { first3, byPrefix } = this;
    for (let i = 0, n = s.length - MIN_LEN; i <= n; i++) {
      if (!first3[(s.charCodeAt(i) << 16) | (s.charCodeAt(i + 1) << 8) | s.charCodeAt(i + 2)]) continue;
      const list = byPrefix.get(s.slice(i, i + MIN_LEN));
      if (!list) continue;
      for (const p of list) if (s.startsWith(p.text, i)) onHit(p.tag, i, p.text.length);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

const shown = (v) => `${JSON.stringify(v.slice(0, Math.min(6, Math.floor(v.length / 3))))}… (${v.length} chars)`;

function context(s, at, len) {
  const esc = (t) => t.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return `${esc(s.slice(Math.max(0, at - 60), at))}<SECRET>${esc(s.slice(at + len, at + len + 60))}`;
}

// The label a short secret is searched after, with what may stand between (quotes, escapes,
// ":" or "=", a scheme), and the value up to its end.
const LABELLED = new RegExp(
  String.raw`(?:password|passwd|secret|token|apikey|authorization)["'\\]*\s*[:=]\s*(?:bearer\s+|basic\s+)?` +
    String.raw`["'\\]*([^"'\\&\s,;}\])]{1,7})(?=["'\\&\s,;}\])]|$)`,
  'gi',
);

// ---------------------------------------------------------------------------------------------

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const { secrets, errors, logs, snapshots } = loadRecord(opts.dir);
  for (const f of opts.extraLogs) {
    if (!existsSync(f)) throw new Error(`--log ${f}: no such file`);
  }
  const problems = [];
  const hits = [];

  // Can the scanner find a secret at all, in each encoding? (Guards the checker itself.)
  {
    const probe = 'probe-Secret/+ü-0123';
    const sc = new Scanner();
    const encs = encodingsOf(probe);
    encs.forEach((e) => sc.add(e.text, e.name));
    for (const e of encs) {
      const found = new Set();
      // A base64 form is looked for inside a longer encoded text, at its own alignment.
      const align = /alignment (\d)/.exec(e.name);
      const b64 = e.name.startsWith('base64url') ? 'base64url' : 'base64';
      const inner = align ? Buffer.from(`${'x'.repeat(3 + Number(align[1]))}${probe}yz`).toString(b64) : e.text;
      sc.scan(`x{"a":"${inner}"}\n`, (tag) => found.add(tag));
      if (!found.has(e.name)) problems.push(`self-test: the scanner misses a secret encoded as ${e.name}`);
    }
  }

  // Which secrets are searched, and how.
  let binary = '';
  if (opts.bin) binary = readFileSync(opts.bin).toString('latin1');
  const byKind = new Map();
  const scanner = new Scanner();
  const shortOnes = new Map(); // value → entry
  const excludedInBinary = [];
  const excludedFiller = [];
  let patterns = 0;
  for (const [value, e] of secrets) {
    for (const k of e.kinds) byKind.set(k, (byKind.get(k) ?? 0) + 1);
    if (value.length < MIN_LEN) {
      shortOnes.set(value, e);
      continue;
    }
    if (new Set(value).size < MIN_DISTINCT) {
      excludedFiller.push(`${[...e.kinds].join('/')} ${shown(value)}`);
      continue;
    }
    if (binary && binary.includes(latin1(value))) {
      excludedInBinary.push(`${[...e.kinds].join('/')} ${shown(value)}`);
      continue;
    }
    const tagBase = { value, kinds: [...e.kinds].join('/'), where: [...e.where].slice(0, 3).join(', ') };
    for (const enc of encodingsOf(value)) {
      scanner.add(enc.text, { ...tagBase, enc: enc.name });
      patterns++;
    }
    const parts = value.split('.');
    if (parts.length === 3 && /^[A-Za-z0-9_-]+$/.test(parts[0]) && parts[2].length >= 16) {
      scanner.add(parts[2], { ...tagBase, enc: 'JWT signature' });
      patterns++;
    }
  }

  // Witnesses: the SHA-256 of refresh tokens and tst_/tsk_ secrets, as the databases hold them.
  const witness = new Scanner();
  const hashed = [...secrets].filter(([v, e]) => [...e.kinds].some((k) => ['refresh_token', 'token_secret', 'key_secret'].includes(k)) && v.length >= 16);
  for (const [v] of hashed) {
    const h = createHash('sha256').update(v).digest();
    witness.add(h.toString('latin1'), v);
    witness.add(h.toString('hex'), v);
  }
  const witnessed = new Set();

  // Counts: a run that recorded too little proves nothing.
  const need = (what, have, min) => {
    if (have < min) problems.push(`only ${have} ${what} recorded (at least ${min} expected): did the run record anything?`);
  };
  const min = (n) => Math.max(1, Math.ceil(n * opts.scale));
  for (const [k, n] of Object.entries(MINIMA.secrets)) need(`${k} secrets`, byKind.get(k) ?? 0, min(n));
  need('database snapshots', snapshots.length, min(MINIMA.snapshots));
  need('server logs', logs.filter((f) => !f.endsWith('-cli.log')).length, min(MINIMA.logs));
  need('error bodies', errors.length, min(MINIMA.errors));

  // One line per file, secret and encoding: its first occurrence, and how many there were.
  const grouped = new Map();
  const onHit = (file, s) => (tag, at, len) => {
    const key = `${file}\0${tag.value}\0${tag.enc}`;
    const g = grouped.get(key);
    if (g) {
      g.n++;
      return;
    }
    const entry = { n: 1, text: `${file}: ${tag.kinds} ${shown(tag.value)} ${tag.enc} (sent in ${tag.where})`, ctx: context(s, at, len) };
    grouped.set(key, entry);
    hits.push(entry);
  };
  const labelled = (file, s) => {
    for (const m of s.matchAll(LABELLED)) {
      const e = shortOnes.get(Buffer.from(m[1], 'latin1').toString('utf8'));
      if (e) hits.push(`${file}: short ${[...e.kinds].join('/')} ${shown(m[1])} after a label:\n    ${context(s, m.index, m[0].length)}`);
    }
  };

  let bytes = 0;
  for (const f of [...logs, ...snapshots, ...opts.extraLogs]) {
    const s = readFileSync(f).toString('latin1');
    bytes += s.length;
    const name = opts.extraLogs.includes(f) ? f : path.relative(opts.dir, f);
    scanner.scan(s, onHit(name, s));
    if (!f.endsWith('.sqlite') && !f.endsWith('.sqlite-wal')) labelled(name, s);
    if (snapshots.includes(f)) witness.scan(s, (v) => witnessed.add(v));
  }
  for (const e of errors) {
    const s = latin1(e.body);
    bytes += s.length;
    const name = `${e.file} (${e.method} ${e.url.replace(/^https?:\/\/[^/]+/, '')} → ${e.status})`;
    scanner.scan(s, onHit(name, s));
    labelled(name, s);
    for (const v of e.carried ?? []) {
      for (const q of [`"${JSON.stringify(v).slice(1, -1)}"`, `'${v}'`]) {
        if (e.body.includes(q)) hits.push(`${name}: the error body quotes a short secret its request carried ${shown(v)}:\n    ${context(s, s.indexOf(latin1(q)), q.length)}`);
      }
    }
  }

  const pct = hashed.length ? (100 * witnessed.size) / hashed.length : 0;
  if (pct < opts.minWitnessPct) {
    problems.push(
      `the snapshots hold the hashes of only ${witnessed.size} of ${hashed.length} recorded refresh tokens and token/key secrets ` +
        `(${pct.toFixed(1)} %, at least ${opts.minWitnessPct} % expected): are they the databases the suite used?`,
    );
  }

  const kinds = [...byKind].sort().map(([k, n]) => `${k} ${n}`).join(', ');
  console.log(
    `secrets audit: ${secrets.size} secrets (${kinds}; ${shortOnes.size} shorter than ${MIN_LEN}, searched after a label only), ` +
      `${patterns} patterns; ${logs.length} logs, ${snapshots.length} snapshots, ${errors.length} error bodies, ` +
      `${opts.extraLogs.length} more logs, ${(bytes / 1048576).toFixed(1)} MiB searched; hashes of ${witnessed.size}/${hashed.length} (${pct.toFixed(1)} %) found in the snapshots`,
  );
  if (excludedInBinary.length) console.log(`left out, found in the server binary: ${excludedInBinary.join('; ')}`);
  if (excludedFiller.length) console.log(`left out, fewer than ${MIN_DISTINCT} distinct characters: ${excludedFiller.join('; ')}`);
  for (const p of problems) console.log(`FAIL: ${p}`);
  for (const h of hits.slice(0, MAX_SHOWN_HITS)) {
    console.log(typeof h === 'string' ? `LEAK ${h}` : `LEAK ${h.text}${h.n > 1 ? ` (${h.n} times)` : ''}:\n    ${h.ctx}`);
  }
  if (hits.length > MAX_SHOWN_HITS) console.log(`… and ${hits.length - MAX_SHOWN_HITS} more`);
  const ok = problems.length === 0 && hits.length === 0;
  console.log(ok ? 'secrets audit: pass' : `secrets audit: FAIL (${hits.length} leaks, ${problems.length} problems)`);
  process.exitCode = ok ? 0 : 1;
}

try {
  main();
} catch (e) {
  console.log(`secrets audit: FAIL: ${e.stack ?? e}`);
  process.exitCode = 1;
}
