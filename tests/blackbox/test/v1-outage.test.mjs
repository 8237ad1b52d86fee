// Native API (/v1) while the database is gone: requests that need it get 503 `unavailable` in
// the /v1 error shape with Retry-After — never another 5xx, a hang or a crash — and the server
// recovers by itself. Defined on PostgreSQL only (the test stops and restarts the cluster that
// scripts/pg.sh started for this run, as outage.test.mjs does).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { PG, repoRoot, startServer, finish, test, sleep, seen } from '../lib/server.mjs';
import { setupKeys, createCollection, createDoc, uniqueName, expect, assertV1Error, login, v1 } from '../lib/v1.mjs';

const pgScript = path.join(repoRoot, 'scripts', 'pg.sh');
const pgctl = (what) => execFileSync('bash', [pgScript, what, PG.host], { stdio: 'pipe' });
let server;

if (PG) {
  before(async () => {
    server = await startServer({});
  });
  after(async () => {
    // 503 is the expected answer while the database is down; anything else 5xx is not.
    for (let i = seen.length - 1; i >= 0; i--) if (seen[i].status === 503) seen.splice(i, 1);
    await finish(server);
  });

  test('/v1 with the database down: 503 unavailable with Retry-After; back: recovered', async () => {
    const { admin } = await setupKeys(server);
    const c = await createCollection(admin);
    await createDoc(admin, c, { id: 'alice', data: { v: 1 }, credentials: { password: 'correct horse' } });
    const tok = await login(server, { collection: c, id: 'alice', password: 'correct horse' });
    const requests = () => [
      admin.get(`/v1/collections/${c}/documents/alice`),
      admin.post(`/v1/collections/${c}/documents`, { id: uniqueName('d'), data: {} }),
      admin.get(`/v1/collections/${c}/documents`),
      v1(server, 'POST', '/v1/login', { body: { collection: c, id: 'alice', password: 'correct horse' } }),
    ];
    pgctl('down');
    let answers;
    try {
      await sleep(300);
      answers = [];
      for (let i = 0; i < 3; i++) answers.push(...(await Promise.all(requests())));
    } finally {
      pgctl('up');
    }
    for (const r of answers) {
      assert.ok(r.status < 500 || r.status === 503, `${r.req} → ${r.status} ${r.text}`);
      if (r.status === 503) {
        assertV1Error(r, 503, 'unavailable');
        assert.match(r.headers.get('retry-after') ?? '', /^\d+$/, `Retry-After on ${r.req}`);
      }
    }
    assert.ok(answers.some((r) => r.status === 503), `no 503 while the database was down: ${answers.map((r) => r.status)}`);

    let recovered = false;
    const deadline = Date.now() + 15000;
    while (!recovered && Date.now() < deadline) {
      await sleep(200);
      recovered = (await admin.get(`/v1/collections/${c}/documents/alice`)).status === 200;
    }
    assert.ok(recovered, 'the server answers 200 again after the database returned');
    assert.equal(server.exitInfo(), null, 'the server is still running');
    expect(await v1(server, 'GET', '/v1/me', { as: tok.secret }), 200);
    await login(server, { collection: c, id: 'alice', password: 'correct horse' });
  });
}
