// Durability (issue 2, benchmark (c); SPEC §6): every refresh a client saw acknowledged survives
// kill -9 of the server, and the database is intact afterwards.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { startServer, finish, test, newUser, refreshRaw, getUserRaw, sleep } from '../lib/server.mjs';

let server;

before(async () => {
  // A long reuse interval: a refresh committed just before the kill whose answer never
  // arrived leaves the client's token rotated; presenting it again right after the restart is
  // then a reuse within the interval, which must succeed too.
  server = await startServer({ SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '120' });
});

after(async () => {
  await finish(server);
});

test('refreshes acknowledged before kill -9 are all present after the restart', async () => {
  const chains = [];
  for (let i = 0; i < 8; i++) {
    const u = await newUser(server, { prefix: 'durable' });
    chains.push({ refresh: u.session.refresh_token, access: u.session.access_token, acked: 0 });
  }
  let stop = false;
  const loops = chains.map(async (c) => {
    while (!stop) {
      let r;
      try {
        r = await refreshRaw(server, c.refresh);
      } catch {
        return; // the server died under this request: its answer was never acknowledged
      }
      if (r.status !== 200) return;
      c.refresh = r.body.refresh_token;
      c.access = r.body.access_token;
      c.acked++;
    }
  });
  await sleep(800);
  stop = true;
  const info = await server.restart('SIGKILL');
  await Promise.all(loops);
  assert.equal(info.signal, 'SIGKILL', JSON.stringify(info));
  const total = chains.reduce((n, c) => n + c.acked, 0);
  assert.ok(total >= 16, `only ${total} refreshes were acknowledged before the kill`);

  for (const c of chains) {
    // The newest acknowledged token of each chain exists (live, or rotated by a request whose
    // answer was lost, which the reuse interval accepts), and so does its session.
    const me = await getUserRaw(server, c.access);
    assert.equal(me.status, 200, me.text);
    const r = await refreshRaw(server, c.refresh);
    assert.equal(r.status, 200, `after ${c.acked} acknowledged refreshes: ${r.text}`);
  }

  if (server.backend === 'sqlite') {
    const check = execFileSync('sqlite3', [server.dbPath, 'PRAGMA integrity_check;'], {
      encoding: 'utf8',
    }).trim();
    assert.equal(check, 'ok');
  }
});
