// POST /logout scopes (issue item 5).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  newUser,
  signIn,
  getUserRaw,
  refreshRaw,
  assertApiError,
  api,
} from '../lib/server.mjs';

let server;

before(async () => {
  server = await startServer({});
});

after(async () => {
  await finish(server);
});

/** Signs the user in n more times; returns [{client, session}] including the first one. */
async function sessions(n) {
  const first = await newUser(server, { prefix: 'logout' });
  const all = [{ client: first.client, session: first.session }];
  for (let i = 1; i < n; i++) all.push(await signIn(server, first.email, first.password));
  return all;
}

async function alive(s) {
  const res = await getUserRaw(server, s.session.access_token);
  if (res.status === 200) return true;
  assertApiError(res, 403, 'session_not_found');
  return false;
}

async function aliveAll(list) {
  const out = [];
  for (const s of list) out.push(await alive(s));
  return out;
}

test('signOut({scope:"local"}) ends only this session', async () => {
  const ss = await sessions(3);
  const { error } = await ss[1].client.signOut({ scope: 'local' });
  assert.equal(error, null);
  assert.deepEqual(await aliveAll(ss), [true, false, true]);
  assert.equal((await ss[1].client.getSession()).data.session, null, 'client forgot its session');
  const r = await refreshRaw(server, ss[1].session.refresh_token);
  assert.equal(r.status, 400, `refresh token of a signed-out session: ${r.text}`);
  const r0 = await refreshRaw(server, ss[0].session.refresh_token);
  assert.equal(r0.status, 200, r0.text);
});

test('signOut({scope:"others"}) ends every session but this one', async () => {
  const ss = await sessions(4);
  const { error } = await ss[2].client.signOut({ scope: 'others' });
  assert.equal(error, null);
  assert.deepEqual(await aliveAll(ss), [false, false, true, false]);
  const me = await ss[2].client.getUser();
  assert.equal(me.error, null, 'the caller stays signed in');
  for (const i of [0, 1, 3]) {
    const r = await refreshRaw(server, ss[i].session.refresh_token);
    assert.equal(r.status, 400, `refresh of session ${i}: ${r.text}`);
  }
});

test('signOut() (global, the default) ends every session of the user and no one else\'s', async () => {
  const ss = await sessions(3);
  const stranger = await newUser(server, { prefix: 'stranger' });
  const { error } = await ss[0].client.signOut();
  assert.equal(error, null);
  assert.deepEqual(await aliveAll(ss), [false, false, false]);
  for (const s of ss) {
    const r = await refreshRaw(server, s.session.refresh_token);
    assert.equal(r.status, 400, r.text);
  }
  const g = await getUserRaw(server, stranger.session.access_token);
  assert.equal(g.status, 200, 'another user keeps their session');
});

test('POST /logout answers 204 with an empty body; a second logout is 403 session_not_found', async () => {
  const ss = await sessions(2);
  const res = await api(server, 'POST', '/logout?scope=local', { token: ss[0].session.access_token });
  assert.equal(res.status, 204, res.text);
  assert.equal(res.text, '');
  const again = await api(server, 'POST', '/logout?scope=local', { token: ss[0].session.access_token });
  assertApiError(again, 403, 'session_not_found');
  assert.deepEqual(await aliveAll(ss), [false, true]);

  const global = await api(server, 'POST', '/logout', { token: ss[1].session.access_token });
  assert.equal(global.status, 204, global.text);
  assert.deepEqual(await aliveAll(ss), [false, false]);
});

test('POST /logout without a token is 401; with an unknown scope is 400', async () => {
  assertApiError(await api(server, 'POST', '/logout'), 401, 'no_authorization');
  const { session } = await newUser(server);
  const bad = await api(server, 'POST', '/logout?scope=everything', { token: session.access_token });
  assert.equal(bad.status, 400, bad.text);
  assert.equal(await alive({ session }), true, 'a refused logout must not log out');
});
