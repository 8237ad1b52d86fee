// Logs are JSON lines, one per request, and never contain secrets (SPEC §2.4).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  makeClient,
  adminClient,
  uniqueEmail,
  api,
  passwordRaw,
  refreshRaw,
} from '../lib/server.mjs';

let server;

before(async () => {
  server = await startServer({ LOG_REQUESTS: 'true', EXTERNAL_ANONYMOUS_USERS_ENABLED: 'true' });
});

after(async () => {
  await finish(server);
});

test('no password, token or key appears in the logs; every stderr line is JSON', async () => {
  const mark = server.logCount();
  const email = uniqueEmail('logs');
  const password = 'Sup3r-Secret-Passw0rd-XYZ';
  const wrong = 'Wr0ng-Secret-Passw0rd-QRS';
  const newPassword = 'N3w-Secret-Passw0rd-LMN';
  const secrets = [password, wrong, newPassword, server.serviceKey, server.anonKey];

  const client = makeClient(server);
  const su = await client.signUp({ email, password });
  assert.equal(su.error, null);
  secrets.push(su.data.session.access_token, su.data.session.refresh_token);
  await passwordRaw(server, email, wrong);
  await passwordRaw(server, `nobody-${email}`, wrong);
  await api(server, 'POST', '/token?grant_type=password', {
    rawBody: `{"email":"${email}","password":"${wrong}"`,
    headers: { 'Content-Type': 'application/json' },
  });
  const si = await makeClient(server).signInWithPassword({ email, password });
  secrets.push(si.data.session.access_token, si.data.session.refresh_token);
  const rf = await refreshRaw(server, si.data.session.refresh_token);
  secrets.push(rf.body.access_token, rf.body.refresh_token);
  await refreshRaw(server, 'not-a-real-refresh-token-abcdef');
  await client.updateUser({ password: newPassword });
  await adminClient(server).admin.listUsers();
  const anon = await makeClient(server).signInAnonymously();
  secrets.push(anon.data.session.access_token, anon.data.session.refresh_token);
  await api(server, 'GET', '/user', { auth: `Bearer ${si.data.session.access_token}x` });

  // Give the logger a moment to flush (the lines are written after the response).
  await new Promise((r) => setTimeout(r, 200));
  const lines = server.logsSince(mark).filter((l) => !l.startsWith('[stdout] '));
  assert.ok(lines.length >= 10, `expected request log lines, got ${lines.length}`);
  for (const line of lines) {
    let obj;
    assert.doesNotThrow(() => (obj = JSON.parse(line)), `not a JSON log line: ${line}`);
    assert.equal(typeof obj, 'object');
    for (const s of secrets) {
      assert.ok(!line.includes(s), `secret ${s.slice(0, 12)}… leaked into the log: ${line}`);
      // Parts of JWTs (payload or signature) must not appear either.
      for (const part of s.split('.').filter((x) => x.length >= 20)) {
        assert.ok(!line.includes(part), `token part ${part.slice(0, 12)}… leaked into the log: ${line}`);
      }
    }
  }
});
