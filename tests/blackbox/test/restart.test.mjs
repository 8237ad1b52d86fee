// State survives a restart: users, sessions, revocations and the signing key (SPEC §5, §6).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import {
  startServer,
  finish,
  test,
  makeClient,
  newUser,
  api,
  getUserRaw,
  refreshRaw,
  passwordRaw,
  assertApiError,
  uniqueEmail,
  jwtPayload,
} from '../lib/server.mjs';

let server; // ES256: the key lives in the database

before(async () => {
  server = await startServer({});
});

after(async () => {
  await finish(server);
});

test('after SIGTERM and restart: same key, tokens, sessions and revocations', async () => {
  const alive = await newUser(server, { prefix: 'restart-alive' });
  const gone = await newUser(server, { prefix: 'restart-gone' });
  assert.equal((await api(server, 'POST', '/logout', { token: gone.session.access_token })).status, 204);
  const kidBefore = (await api(server, 'GET', '/.well-known/jwks.json')).body.keys.map((k) => k.kid).sort();

  const serviceBefore = server.serviceKey;
  const info = await server.restart('SIGTERM');
  assert.equal(info.code, 0, `graceful stop: ${JSON.stringify(info)}`);

  const kidAfter = (await api(server, 'GET', '/.well-known/jwks.json')).body.keys.map((k) => k.kid).sort();
  assert.deepEqual(kidAfter, kidBefore, 'the signing key persists across restarts');
  assert.equal(jwtPayload(server.anonKey).role, 'anon');
  // The service key handed out before the restart is still an admin credential.
  const list = await api(server, 'GET', '/admin/users', { token: serviceBefore });
  assert.equal(list.status, 200, list.text);

  // Tokens issued before the restart still verify and their session still exists.
  const me = await getUserRaw(server, alive.session.access_token);
  assert.equal(me.status, 200, me.text);
  assert.equal(me.body.id, alive.user.id);
  const JWKS = createRemoteJWKSet(new URL(`${server.url}/.well-known/jwks.json`));
  await jwtVerify(alive.session.access_token, JWKS, { issuer: 'tessera', audience: 'authenticated' });

  // The revoked session stays revoked.
  assertApiError(await getUserRaw(server, gone.session.access_token), 403, 'session_not_found');

  const r = await refreshRaw(server, alive.session.refresh_token);
  assert.equal(r.status, 200, r.text);
  const si = await makeClient(server).signInWithPassword({ email: alive.email, password: alive.password });
  assert.equal(si.error, null);
});

test('an acknowledged signup survives kill -9', async () => {
  const email = uniqueEmail('kill9');
  const su = await api(server, 'POST', '/signup', { body: { email, password: 'correct-horse-1' } });
  assert.equal(su.status, 200, su.text);
  const upd = await api(server, 'PUT', '/user', { token: su.body.access_token, body: { data: { durable: true } } });
  assert.equal(upd.status, 200, upd.text);

  await server.restart('SIGKILL');

  const si = await passwordRaw(server, email, 'correct-horse-1');
  assert.equal(si.status, 200, si.text);
  assert.equal(si.body.user.user_metadata.durable, true);
  const me = await getUserRaw(server, su.body.access_token);
  assert.equal(me.status, 200, me.text);
});
