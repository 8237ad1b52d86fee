// Several stateless nodes on one PostgreSQL database (issue 3): revocations reach every node
// within a second, refresh-token reuse is detected across nodes, and unique e-mails hold for
// the cluster, not per node. Skipped on SQLite, which serves one node.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  PG,
  BIN,
  jwtHeader,
  startServer,
  finish,
  test,
  newUser,
  getUserRaw,
  refreshRaw,
  api,
  assertApiError,
  uniqueEmail,
  sleep,
} from '../lib/server.mjs';

// Defined only on PostgreSQL (make test runs the suite on both backends), so that a SQLite run
// reports no skipped test.
const cluster = PG ? test : () => {};
let a;
let b;

if (PG) {
  before(async () => {
    a = await startServer({});
    b = await startServer({}, { shareWith: a });
  });

  after(async () => {
    await finish(b, a);
  });
}

async function eventually(fn, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() > deadline) return false;
    await sleep(25);
  }
}

cluster('sign in on node A, log out on node B: A refuses the token within a second', async () => {
  const u = await newUser(a, { prefix: 'cluster-logout' });
  assert.equal((await getUserRaw(a, u.session.access_token)).status, 200); // A caches it
  assert.equal((await getUserRaw(b, u.session.access_token)).status, 200);
  assert.equal((await api(b, 'POST', '/logout', { token: u.session.access_token })).status, 204);
  const t0 = Date.now();
  const refused = await eventually(async () => (await getUserRaw(a, u.session.access_token)).status === 403, 1000);
  assert.ok(refused, `node A still accepted the token ${Date.now() - t0} ms after the logout on B`);
  assertApiError(await getUserRaw(a, u.session.access_token), 403, 'session_not_found');
});

cluster('a user deleted through node B is refused by node A within a second', async () => {
  const u = await newUser(a, { prefix: 'cluster-delete' });
  assert.equal((await getUserRaw(a, u.session.access_token)).status, 200);
  const del = await api(b, 'DELETE', `/admin/users/${u.user.id}`, { token: b.serviceKey });
  assert.equal(del.status, 200, del.text);
  assert.ok(await eventually(async () => (await getUserRaw(a, u.session.access_token)).status === 403, 1000));
});

cluster('refresh reuse past the interval on the other node revokes the session everywhere', async () => {
  const c = await startServer({ SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '1' });
  const d = await startServer({ SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '1' }, { shareWith: c });
  try {
    const u = await newUser(c, { prefix: 'cluster-reuse2' });
    const rotated = await refreshRaw(c, u.session.refresh_token);
    assert.equal(rotated.status, 200, rotated.text);
    assert.equal((await getUserRaw(c, rotated.body.access_token)).status, 200);
    await sleep(1300);
    assertApiError(await refreshRaw(d, u.session.refresh_token), 400, 'refresh_token_already_used');
    assert.ok(await eventually(async () => (await getUserRaw(c, rotated.body.access_token)).status === 403, 1000));
    assertApiError(await refreshRaw(c, rotated.body.refresh_token), 400, 'refresh_token_not_found');
  } finally {
    await finish(d, c);
  }
});

cluster('50 concurrent sign-ups of one e-mail across both nodes create exactly one user', async () => {
  const email = uniqueEmail('cluster-race');
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      api(i % 2 ? b : a, 'POST', '/signup', { body: { email, password: 'correct-horse-1' } }),
    ),
  );
  const ok = results.filter((r) => r.status === 200);
  const taken = results.filter((r) => r.status === 422 && r.body?.code === 'user_already_exists');
  assert.equal(ok.length, 1, results.map((r) => `${r.status} ${r.text.slice(0, 80)}`).join('\n'));
  assert.equal(taken.length, 49);
  const list = await api(a, 'GET', `/admin/users?filter=${encodeURIComponent(email)}`, { token: a.serviceKey });
  assert.equal(list.body.users.length, 1);
});

cluster('both nodes serve the same signing keys and verify each other\'s tokens', async () => {
  const ka = (await api(a, 'GET', '/.well-known/jwks.json')).body.keys.map((k) => k.kid).sort();
  const kb = (await api(b, 'GET', '/.well-known/jwks.json')).body.keys.map((k) => k.kid).sort();
  assert.deepEqual(ka, kb);
  const u = await newUser(b, { prefix: 'cluster-keys' });
  assert.equal((await getUserRaw(a, u.session.access_token)).status, 200);
});

cluster('a key rotation made through one node\'s database reaches both nodes within a second', async () => {
  const r = spawnSync(BIN, ['jwt', 'rotate'], { env: a.env, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const kid = r.stdout.trim().split(/\s+/).pop();
  for (const node of [a, b]) {
    const switched = await eventually(async () => {
      const u = await newUser(node, { prefix: 'cluster-rotate' });
      return jwtHeader(u.session.access_token).kid === kid;
    }, 1500);
    assert.ok(switched, `${node.url} signs with the new key`);
  }
});
