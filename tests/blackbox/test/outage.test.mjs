// The database goes away under light load and comes back (issue 3): while it is gone, requests
// that need it get 503 — never a crash, a hang or another 5xx — and the server recovers by
// itself when it returns. Defined on PostgreSQL only (the test stops and restarts the cluster
// that scripts/pg.sh started for this run).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  PG,
  repoRoot,
  startServer,
  finish,
  test,
  newUser,
  getUserRaw,
  api,
  uniqueEmail,
  sleep,
  seen,
} from '../lib/server.mjs';

const pgScript = path.join(repoRoot, 'scripts', 'pg.sh');
const pgctl = (what) => execFileSync('bash', [pgScript, what, PG.host], { stdio: 'pipe' });
let server;

if (PG) {
  before(async () => {
    server = await startServer({});
  });
  after(async () => {
    // 503 is this test's expected answer while the database is down; anything else 5xx is not.
    for (let i = seen.length - 1; i >= 0; i--) if (seen[i].status === 503) seen.splice(i, 1);
    await finish(server);
  });

  test('database down: 503 and no crash; back: the server recovers by itself', async () => {
    const u = await newUser(server, { prefix: 'outage' });
    assert.equal((await getUserRaw(server, u.session.access_token)).status, 200);
    const statuses = [];
    let stop = false;
    const load = (async () => {
      while (!stop) {
        const r = await getUserRaw(server, u.session.access_token);
        statuses.push(r.status);
        const s = await api(server, 'POST', '/signup', {
          body: { email: uniqueEmail('outage-load'), password: 'correct-horse-1' },
        });
        statuses.push(s.status);
        await sleep(20);
      }
    })();
    await sleep(300);
    pgctl('down');
    await sleep(1500);
    const during = statuses.length;
    pgctl('up');
    // Recovery: within a few seconds every request succeeds again.
    let recovered = false;
    const deadline = Date.now() + 15000;
    while (!recovered && Date.now() < deadline) {
      await sleep(200);
      const r = await getUserRaw(server, u.session.access_token);
      recovered = r.status === 200;
    }
    stop = true;
    await load;
    assert.ok(recovered, 'the server answers 200 again after the database returned');
    assert.equal(server.exitInfo(), null, 'the server is still running');
    const bad = statuses.filter((s) => s >= 500 && s !== 503);
    assert.deepEqual(bad, [], `only 503 is allowed while the database is down: ${statuses.join(',')}`);
    assert.ok(statuses.slice(0, during).includes(503), 'requests during the outage got 503');
    const r = await api(server, 'GET', '/ready');
    assert.equal(r.status, 200, r.text);
    const fresh = await newUser(server, { prefix: 'outage-after' });
    assert.equal((await getUserRaw(server, fresh.session.access_token)).status, 200);
  });
}
