// Crash test (issue 7): the server is killed with SIGKILL every few seconds while several clients
// sign up, sign in with a password and refresh their sessions. After each restart, and at the
// end, nothing a client saw acknowledged is lost and no refresh family is in an impossible state:
//
// - every acknowledged sign-up is in the database (same id, same e-mail) and can sign in;
// - every acknowledged session exists, and every refresh token whose issuance was acknowledged is
//   in it: rotated (revoked, with a child) when the client saw that rotation acknowledged, live
//   otherwise — or rotated by a refresh committed just before the kill whose answer was lost,
//   which the reuse interval then accepts once more;
// - in every session of the database: one root token; each child's parent is in the same session
//   and revoked; each revoked token has a child; at least one live token (a session that still
//   answers always has a way to refresh); and no more live tokens than one plus the refreshes
//   whose answers were lost (each may have left one live child nobody holds);
// - the database passes an integrity check (SQLite: PRAGMA integrity_check and
//   foreign_key_check; PostgreSQL: amcheck over every B-tree index of Tessera's schema, heap
//   included);
// - no answer that arrived was anything but 200 (connection errors are expected only at the
//   kill; every test file also asserts no 5xx at all).
//
// Short by default (CI: three kills). The long run: CRASH_SECONDS=600 (the kill loop goes on for
// that long, restarts and checks included) or CRASH_CYCLES=N (kills); CRASH_KILL_EVERY_MS
// (default 2000) is the mean time between kills (each interval is drawn from 0.5x to 1.5x of
// it); CRASH_CLIENTS (default 6) concurrent clients.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { startServer, finish, test, api, jwtPayload, uniqueEmail, sleep } from '../lib/server.mjs';

const SECONDS = Number(process.env.CRASH_SECONDS || 0);
const CYCLES = Number(process.env.CRASH_CYCLES || (SECONDS > 0 ? 1e9 : 3));
const KILL_EVERY_MS = Number(process.env.CRASH_KILL_EVERY_MS || 2000);
const CLIENTS = Number(process.env.CRASH_CLIENTS || 6);
const PASSWORD = 'correct-horse-crash';

let server;

before(async () => {
  // A refresh committed just before the kill whose answer never arrived leaves the client
  // holding a token that is now rotated; it presents it again after the restart, which must
  // succeed as a reuse within the interval (restart plus checks can take longer than the
  // default 10 s on a sanitizer build, hence 600 s).
  server = await startServer({ SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '600' });
});

after(async () => {
  await finish(server);
});

const sha256 = (s) => createHash('sha256').update(s).digest('hex');

function run(file, args) {
  return new Promise((resolve, reject) => {
    execFile(file, args, { maxBuffer: 256 << 20, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Runs one query on the server's database; resolves rows as arrays of strings. */
async function query(sqliteSql, pgSql) {
  let out;
  if (server.backend === 'sqlite') {
    out = await run('sqlite3', ['-cmd', '.timeout 10000', '-separator', '|', server.dbPath, sqliteSql]);
  } else {
    const u = new URL(server.dbUrl);
    out = await run('psql', [
      '-h', u.searchParams.get('host'), '-p', u.searchParams.get('port'), '-U', 'postgres',
      '-d', u.pathname.slice(1), '-X', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', pgSql,
    ]);
  }
  return out.split('\n').filter((l) => l !== '').map((l) => l.split('|'));
}

async function integrityCheck() {
  if (server.backend === 'sqlite') {
    const ic = await query('PRAGMA integrity_check;');
    assert.deepEqual(ic, [['ok']], `PRAGMA integrity_check: ${ic.join('\n')}`);
    const fk = await query('PRAGMA foreign_key_check;');
    assert.deepEqual(fk, [], `PRAGMA foreign_key_check: ${fk.join('\n')}`);
    return;
  }
  // amcheck: every B-tree index of the schema is well formed and (heapallindexed) indexes every
  // row of its table. A corrupt index makes bt_index_check raise, which fails the query.
  await query('', 'CREATE EXTENSION IF NOT EXISTS amcheck');
  const n = await query(
    '',
    "SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid " +
      "JOIN pg_namespace s ON s.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam " +
      "WHERE s.nspname = 'tessera' AND a.amname = 'btree'",
  );
  assert.ok(Number(n[0][0]) >= 5, `amcheck looked at ${n[0][0]} indexes`);
  const orphans = await query(
    '',
    'SELECT (SELECT count(*) FROM tessera.refresh_tokens r WHERE NOT EXISTS ' +
      '(SELECT 1 FROM tessera.sessions s WHERE s.id = r.session_id)) + ' +
      '(SELECT count(*) FROM tessera.sessions s WHERE NOT EXISTS ' +
      '(SELECT 1 FROM tessera.identities i WHERE i.id = s.identity_id)) + ' +
      '(SELECT count(*) FROM tessera.credentials c WHERE NOT EXISTS ' +
      '(SELECT 1 FROM tessera.identities i WHERE i.id = c.identity_id))',
  );
  assert.equal(orphans[0][0], '0', 'rows whose parent row is gone');
}

// ---- what the clients saw acknowledged ----

/** @type {{id:string,email:string,loggedIn:boolean}[]} */
const users = [];
/**
 * A session a client holds: its acknowledged tokens in order (the last is the head), and how many
 * refreshes of it lost their answer (each may have committed a child nobody holds).
 * @type {{id:string,userId:string,tokens:string[],lost:number,pending:boolean}[]}
 */
const sessions = [];
/** The sessions each client refreshes (only its own, so that no two clients race on one). */
const owned = Array.from({ length: CLIENTS }, () => []);
const failures = [];
const counts = { signup: 0, login: 0, refresh: 0, lost: 0, lostCommitted: 0, lostOther: 0, kills: 0 };

/** Runs fn over items, CLIENTS at a time. */
async function eachParallel(items, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: CLIENTS }, worker));
}

function addSession(body, owner) {
  const claims = jwtPayload(body.access_token);
  const s = {
    id: claims.session_id,
    userId: claims.sub,
    tokens: [body.refresh_token],
    lost: 0,
    pending: false,
  };
  sessions.push(s);
  owned[owner].push(s);
}

let inflight = 0;

/** One request; null when no answer arrived (the server died under it). */
async function call(method, pathname, body) {
  inflight++;
  try {
    return await api(server, method, pathname, { body });
  } catch {
    return null;
  } finally {
    inflight--;
  }
}

/**
 * Waits until most clients have a request out (so that the kill lands inside the server's work
 * rather than between requests), for at most 250 ms, then up to 2 ms more at random.
 */
async function busyMoment() {
  const until = Date.now() + 250;
  while (inflight < Math.ceil(CLIENTS * 0.75) && Date.now() < until) await new Promise(setImmediate);
  await sleep(Math.random() * 2);
}

const pick = (list) => list[Math.floor(Math.random() * list.length)];

async function client(w, halted) {
  while (!halted()) {
    const mine = owned[w];
    const roll = Math.random();
    if (roll < 0.3 || users.length === 0 || (roll >= 0.5 && mine.length === 0)) {
      const email = uniqueEmail('crash');
      const r = await call('POST', '/signup', { email, password: PASSWORD });
      if (!r) {
        counts.lostOther++;
        break;
      }
      if (r.status !== 200) {
        failures.push(`signup: ${r.status} ${r.text}`);
        continue;
      }
      users.push({ id: r.body.user.id, email, loggedIn: false });
      addSession(r.body, w);
      counts.signup++;
    } else if (roll < 0.5) {
      const u = pick(users);
      const r = await call('POST', '/token?grant_type=password', { email: u.email, password: PASSWORD });
      if (!r) {
        counts.lostOther++;
        break;
      }
      if (r.status !== 200) {
        failures.push(`login of acknowledged user ${u.id}: ${r.status} ${r.text}`);
        continue;
      }
      addSession(r.body, w);
      counts.login++;
    } else {
      const s = pick(mine);
      const head = s.tokens[s.tokens.length - 1];
      const r = await call('POST', '/token?grant_type=refresh_token', { refresh_token: head });
      if (!r) {
        // The refresh may or may not have committed; the client will present the same token
        // again, which the reuse interval accepts either way.
        s.lost++;
        s.pending = true;
        counts.lost++;
        break;
      }
      if (r.status !== 200) {
        failures.push(`refresh of acknowledged token (session ${s.id}, ${s.tokens.length} tokens): ` +
            `${r.status} ${r.text}`);
        continue;
      }
      assert.equal(jwtPayload(r.body.access_token).session_id, s.id);
      s.tokens.push(r.body.refresh_token);
      s.pending = false;
      s.counted = false;
      counts.refresh++;
    }
  }
}

/** Checks the database against what the clients saw acknowledged. */
async function verify(stage) {
  await integrityCheck();
  const ids = new Map(
    (await query("SELECT id, email FROM identities WHERE collection = 'users';",
      "SELECT id, email FROM tessera.identities WHERE collection = 'users'")).map(([id, e]) => [id, e]),
  );
  for (const u of users) {
    assert.equal(ids.get(u.id), u.email, `${stage}: acknowledged sign-up ${u.id} <${u.email}> is missing`);
  }
  const dbSessions = new Map(
    (await query('SELECT id, identity_id FROM sessions;', 'SELECT id, identity_id FROM tessera.sessions')).map(
      ([id, uid]) => [id, uid],
    ),
  );
  const tokens = new Map();
  const bySession = new Map();
  for (const [hash, sid, parent, revoked] of await query(
    'SELECT lower(hex(hash)), session_id, lower(hex(parent)), revoked_at IS NOT NULL FROM refresh_tokens;',
    "SELECT encode(hash, 'hex'), session_id, coalesce(encode(parent, 'hex'), ''), " +
      '(revoked_at IS NOT NULL)::int FROM tessera.refresh_tokens',
  )) {
    const t = { hash, sid, parent, revoked: revoked === '1', children: 0 };
    tokens.set(hash, t);
    if (!bySession.has(sid)) bySession.set(sid, []);
    bySession.get(sid).push(t);
  }
  for (const t of tokens.values()) if (t.parent) tokens.get(t.parent) && tokens.get(t.parent).children++;

  // Every refresh family in the database is in a possible state.
  const known = new Map(sessions.map((s) => [s.id, s]));
  for (const [sid, uid] of dbSessions) {
    const family = bySession.get(sid) ?? [];
    assert.ok(ids.has(uid), `${stage}: session ${sid} belongs to no user`);
    const live = family.filter((t) => !t.revoked);
    assert.ok(live.length >= 1, `${stage}: session ${sid} has ${family.length} tokens and none live`);
    assert.equal(family.filter((t) => !t.parent).length, 1, `${stage}: session ${sid} has not one root token`);
    for (const t of family) {
      if (t.parent) {
        const p = tokens.get(t.parent);
        assert.ok(p, `${stage}: token ${t.hash} of session ${sid} has a parent that is gone`);
        assert.equal(p.sid, sid, `${stage}: token ${t.hash}'s parent is in another session`);
        assert.ok(p.revoked, `${stage}: token ${t.hash}'s parent is still live`);
      }
      if (t.revoked) assert.ok(t.children >= 1, `${stage}: revoked token ${t.hash} has no child`);
    }
    const s = known.get(sid);
    const allowed = 1 + (s ? s.lost : 0);
    assert.ok(live.length <= allowed, `${stage}: session ${sid} has ${live.length} live tokens (at most ${allowed})`);
  }
  for (const sid of bySession.keys()) assert.ok(dbSessions.has(sid), `${stage}: tokens of a missing session ${sid}`);

  // Every acknowledged session and token is there, in the state the client saw.
  for (const s of sessions) {
    assert.equal(dbSessions.get(s.id), s.userId, `${stage}: acknowledged session ${s.id} is missing`);
    s.tokens.forEach((tok, i) => {
      const t = tokens.get(sha256(tok));
      assert.ok(t, `${stage}: acknowledged refresh token #${i} of session ${s.id} is missing`);
      assert.equal(t.sid, s.id, `${stage}: refresh token #${i} moved to session ${t.sid}`);
      if (i > 0) assert.equal(t.parent, sha256(s.tokens[i - 1]), `${stage}: token #${i} of ${s.id}: wrong parent`);
      const head = i === s.tokens.length - 1;
      if (!head) {
        assert.ok(t.revoked, `${stage}: token #${i} of ${s.id} was rotated (acknowledged) but is live`);
      } else if (!s.pending) {
        assert.ok(!t.revoked, `${stage}: the head of ${s.id} is revoked though no refresh of it was sent`);
      } else if (t.revoked) {
        // The lost refresh committed: its child exists though nobody holds it.
        assert.ok(t.children >= 1, `${stage}: pending head of ${s.id} revoked without a child`);
        if (!s.counted) counts.lostCommitted++;
        s.counted = true;
      }
    });
  }

  // Every sign-up acknowledged since the last check signs in. (These sessions are not added to
  // the clients' ones: the family checks above see them as sessions of one live root token.)
  await eachParallel(
    users.filter((x) => !x.loggedIn),
    async (u) => {
      const r = await api(server, 'POST', '/token?grant_type=password', {
        body: { email: u.email, password: PASSWORD },
      });
      assert.equal(r.status, 200, `${stage}: acknowledged user ${u.email} cannot sign in: ${r.text}`);
      assert.equal(r.body.user.id, u.id);
      u.loggedIn = true;
    },
  );
}

test(
  `kill -9 every ~${KILL_EVERY_MS} ms under sign-up, login and refresh load loses no acknowledged write`,
  { timeout: Math.max(120000, (SECONDS * 2 + 120) * 1000, CYCLES < 1e9 ? CYCLES * 30000 : 0) },
  async (t) => {
    const started = Date.now();
    let cycle = 0;
    while (cycle < CYCLES && (SECONDS === 0 || Date.now() - started < SECONDS * 1000)) {
      cycle++;
      let halt = false;
      const clients = Array.from({ length: CLIENTS }, (_, w) => client(w, () => halt));
      await sleep(KILL_EVERY_MS * (0.5 + Math.random()));
      await busyMoment();
      // server.restart sends SIGKILL before it returns its promise; only then do the clients
      // stop, so that the kill lands in the middle of their requests.
      const restarted = server.restart('SIGKILL');
      halt = true;
      const info = await restarted;
      await Promise.all(clients);
      assert.equal(info.signal, 'SIGKILL', JSON.stringify(info));
      counts.kills++;
      assert.deepEqual(failures, [], `answers other than 200 before kill ${cycle}`);
      await verify(`after kill ${cycle}`);
    }
    // At the end: every acknowledged session still refreshes from the head its client holds
    // (pending ones through the reuse interval) and answers GET /user with the new token.
    await eachParallel(sessions, async (s) => {
      const r = await api(server, 'POST', '/token?grant_type=refresh_token', {
        body: { refresh_token: s.tokens[s.tokens.length - 1] },
      });
      const what = `final refresh of session ${s.id} (${s.tokens.length} tokens, ${s.lost} lost)`;
      assert.equal(r.status, 200, `${what}: ${r.text}`);
      s.tokens.push(r.body.refresh_token);
      s.pending = false;
      const me = await api(server, 'GET', '/user', { token: r.body.access_token });
      assert.equal(me.status, 200, me.text);
      assert.equal(me.body.id, s.userId);
    });
    await verify('at the end');
    t.diagnostic(
      `${server.backend}: ${counts.kills} kills in ${((Date.now() - started) / 1000).toFixed(1)} s; acknowledged ` +
        `${counts.signup} sign-ups, ${counts.login} logins, ${counts.refresh} refreshes; ${counts.lost} refreshes ` +
        `lost their answer, ${counts.lostCommitted} of them committed (and ${counts.lostOther} sign-ups or ` +
        `logins); ${sessions.length} sessions checked`,
    );
    assert.ok(counts.signup > 0 && counts.refresh > 0 && counts.login > 0, JSON.stringify(counts));
  },
);
