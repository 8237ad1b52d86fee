// Password-hash pool back-pressure: a full queue answers 429, not a stall (issue item 11).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  uniqueEmail,
  api,
  passwordRaw,
} from '../lib/server.mjs';

let server;
let email;
const password = 'correct-horse-1';

before(async () => {
  // Default argon2 parameters (no fast-hash overrides), one worker, one waiting slot.
  server = await startServer({
    PASSWORD_HASH_WORKERS: '1',
    PASSWORD_HASH_QUEUE: '1',
    PASSWORD_HASH_MEMORY_KIB: null,
    PASSWORD_HASH_ITERATIONS: null,
  });
  email = uniqueEmail('storm');
  const res = await api(server, 'POST', '/signup', { body: { email, password } });
  assert.equal(res.status, 200, res.text);
});

after(async () => {
  await finish(server);
});

test('20 concurrent logins: some 429 over_request_rate_limit, the rest 200/400, health answers', async () => {
  const storm = Array.from({ length: 20 }, (_, i) =>
    passwordRaw(server, email, i % 2 === 0 ? password : 'wrong-horse-1').then((r) => ({ i, r })),
  );
  // While the storm is in flight, the health check still answers.
  const health = await api(server, 'GET', '/health');
  const results = await Promise.all(storm);
  assert.equal(health.status, 200, health.text);

  const counts = {};
  for (const { i, r } of results) {
    counts[r.status] = (counts[r.status] ?? 0) + 1;
    assert.ok([200, 400, 429].includes(r.status), `request ${i}: ${r.status} ${r.text}`);
    if (r.status === 200) {
      assert.equal(i % 2, 0, `a wrong password got 200 (request ${i})`);
      assert.ok(r.body.access_token);
    } else if (r.status === 400) {
      assert.equal(i % 2, 1, `the right password got 400 (request ${i}): ${r.text}`);
      assert.equal(r.body.code, 'invalid_credentials');
    } else {
      assert.equal(r.body?.code, 'over_request_rate_limit', r.text);
      assert.equal(r.headers.get('x-sb-error-code'), 'over_request_rate_limit');
    }
  }
  assert.ok((counts[429] ?? 0) >= 1, `expected some 429s, got ${JSON.stringify(counts)}`);
  assert.ok((counts[200] ?? 0) + (counts[400] ?? 0) >= 1, `expected some logins to be served: ${JSON.stringify(counts)}`);

  // After the storm the pool drains and a normal login works.
  const after = await passwordRaw(server, email, password);
  assert.equal(after.status, 200, after.text);
});

test('token checks are not blocked by a login storm', async () => {
  const login = await passwordRaw(server, email, password);
  assert.equal(login.status, 200, login.text);
  const token = login.body.access_token;
  const storm = Array.from({ length: 20 }, () => passwordRaw(server, email, password));
  const checks = await Promise.all(Array.from({ length: 10 }, () => api(server, 'GET', '/user', { token })));
  const results = await Promise.all(storm);
  assert.deepEqual(checks.map((c) => c.status), Array(10).fill(200));
  for (const r of results) assert.ok([200, 429].includes(r.status), `${r.status} ${r.text}`);
});
