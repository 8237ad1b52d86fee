// Refresh-token rotation, reuse interval and family revocation (issue item 4).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startServer,
  finish,
  test,
  makeClient,
  newUser,
  getUserRaw,
  refreshRaw,
  assertApiError,
  assertAuthError,
  api,
  jwtPayload,
  sleep,
} from '../lib/server.mjs';

let server; // default reuse interval (10 s)
let strict; // SECURITY_REFRESH_TOKEN_REUSE_INTERVAL=1
let norot; // SECURITY_REFRESH_TOKEN_REUSE_INTERVAL=1, SECURITY_REFRESH_TOKEN_ROTATION_ENABLED=false

before(async () => {
  server = await startServer({});
  strict = await startServer({ SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '1' });
  norot = await startServer({
    SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: '1',
    SECURITY_REFRESH_TOKEN_ROTATION_ENABLED: 'false',
  });
});

after(async () => {
  await finish(server, strict, norot);
});

test('refreshSession rotates the refresh token and keeps the session', async () => {
  const { client, session: s0, user } = await newUser(server);
  const { data, error } = await client.refreshSession();
  assert.equal(error, null);
  const s1 = data.session;
  assert.ok(s1);
  assert.notEqual(s1.refresh_token, s0.refresh_token, 'refresh token must rotate');
  assert.equal(s1.token_type, 'bearer');
  assert.ok(s1.expires_in > 0);
  assert.equal(s1.user.id, user.id);
  assert.equal(data.user.id, user.id);

  const c0 = jwtPayload(s0.access_token);
  const c1 = jwtPayload(s1.access_token);
  assert.equal(c1.session_id, c0.session_id, 'same session after refresh');
  assert.ok(c1.amr.some((a) => a.method === 'password'), `amr keeps the sign-in method: ${JSON.stringify(c1.amr)}`);
  assert.equal(c1.aal, 'aal1');
  assert.equal(c1.sub, user.id);

  // Both the old and the new access token are still valid (same live session).
  const g0 = await getUserRaw(server, s0.access_token);
  assert.equal(g0.status, 200, g0.text);
  const g1 = await getUserRaw(server, s1.access_token);
  assert.equal(g1.status, 200, g1.text);

  // The client now holds the new session and can refresh again.
  const again = await client.refreshSession();
  assert.equal(again.error, null);
  assert.notEqual(again.data.session.refresh_token, s1.refresh_token);
});

test('reusing the previous refresh token within the reuse interval returns a working session', async () => {
  const { session: s0 } = await newUser(server);
  const r1 = await refreshRaw(server, s0.refresh_token);
  assert.equal(r1.status, 200, r1.text);

  // The client "lost" r1 and retries with the old token.
  const again = await refreshRaw(server, s0.refresh_token);
  assert.equal(again.status, 200, again.text);
  assert.equal(typeof again.body.refresh_token, 'string');
  assert.equal(jwtPayload(again.body.access_token).session_id, jwtPayload(s0.access_token).session_id);
  const g = await getUserRaw(server, again.body.access_token);
  assert.equal(g.status, 200, g.text);
  const next = await refreshRaw(server, again.body.refresh_token);
  assert.equal(next.status, 200, next.text);

  // Through auth-js as well.
  const viaClient = await makeClient(server).refreshSession({ refresh_token: s0.refresh_token });
  assert.equal(viaClient.error, null);
  assert.ok(viaClient.data.session);
  const me = await getUserRaw(server, viaClient.data.session.access_token);
  assert.equal(me.status, 200, me.text);
});

test('reusing an older (grand-parent) refresh token within the interval still works', async () => {
  const { session: s0 } = await newUser(server);
  const r1 = await refreshRaw(server, s0.refresh_token);
  assert.equal(r1.status, 200, r1.text);
  const r2 = await refreshRaw(server, r1.body.refresh_token);
  assert.equal(r2.status, 200, r2.text);
  const r0 = await refreshRaw(server, s0.refresh_token);
  assert.equal(r0.status, 200, r0.text);
  const g = await getUserRaw(server, r0.body.access_token);
  assert.equal(g.status, 200, g.text);
});

test('an unknown refresh token gives refresh_token_not_found 400', async () => {
  const { error, data } = await makeClient(server).refreshSession({
    refresh_token: 'doesnotexist' + 'q'.repeat(20),
  });
  assertAuthError(error, 400, 'refresh_token_not_found');
  assert.equal(data.session, null);

  const raw = await refreshRaw(server, 'abcdefghijklmnopqrstuvwx');
  assertApiError(raw, 400, 'refresh_token_not_found');
});

test('an empty or missing refresh token is a 400', async () => {
  const empty = await refreshRaw(server, '');
  assert.equal(empty.status, 400, empty.text);
  const missing = await api(server, 'POST', '/token?grant_type=refresh_token', { body: {} });
  assert.equal(missing.status, 400, missing.text);
  const wrongType = await api(server, 'POST', '/token?grant_type=refresh_token', {
    body: { refresh_token: 12345 },
  });
  assert.equal(wrongType.status, 400, wrongType.text);
});

test('two concurrent refreshes of the same token both succeed', async () => {
  const { session: s0 } = await newUser(server);
  const [a, b] = await Promise.all([
    refreshRaw(server, s0.refresh_token),
    refreshRaw(server, s0.refresh_token),
  ]);
  assert.equal(a.status, 200, a.text);
  assert.equal(b.status, 200, b.text);
  for (const r of [a, b]) {
    const g = await getUserRaw(server, r.body.access_token);
    assert.equal(g.status, 200, g.text);
  }
  const next = await refreshRaw(server, a.body.refresh_token);
  assert.equal(next.status, 200, next.text);
});

test('five concurrent refreshes of the same token all succeed', async () => {
  const { session: s0 } = await newUser(server);
  const results = await Promise.all(Array.from({ length: 5 }, () => refreshRaw(server, s0.refresh_token)));
  assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200], results.map((r) => r.text).join('\n'));
});

// One wait past the 1 s reuse interval serves every after-the-interval check below.
test('after the reuse interval: already-used detection, family revocation, rotation off', async () => {
  // Chain A (strict): s0 → r1 → r2, plus a second login of the same user that must survive.
  const { session: s0, email, password } = await newUser(strict);
  const other = await makeClient(strict).signInWithPassword({ email, password });
  assert.equal(other.error, null);
  const r1 = await refreshRaw(strict, s0.refresh_token);
  assert.equal(r1.status, 200, r1.text);
  const r2 = await refreshRaw(strict, r1.body.refresh_token);
  assert.equal(r2.status, 200, r2.text);
  assert.equal((await getUserRaw(strict, r2.body.access_token)).status, 200);

  // Chain B (strict): p0 → p1; p0 is the parent of the active token.
  const { session: p0 } = await newUser(strict);
  const p1 = await refreshRaw(strict, p0.refresh_token);
  assert.equal(p1.status, 200, p1.text);

  // Chain C (rotation off): n0 → n1 → n2.
  const { session: n0 } = await newUser(norot);
  const n1 = await refreshRaw(norot, n0.refresh_token);
  assert.equal(n1.status, 200, n1.text);
  assert.notEqual(n1.body.refresh_token, n0.refresh_token);
  const n2 = await refreshRaw(norot, n1.body.refresh_token);
  assert.equal(n2.status, 200, n2.text);

  await sleep(2100); // > SECURITY_REFRESH_TOKEN_REUSE_INTERVAL (1 s), with margin for whole-second clocks

  // A: s0 was rotated twice; reusing it now is the theft signal.
  const { error } = await makeClient(strict).refreshSession({ refresh_token: s0.refresh_token });
  assertAuthError(error, 400, 'refresh_token_already_used');
  const rawAgain = await refreshRaw(strict, s0.refresh_token);
  assert.equal(rawAgain.status, 400, rawAgain.text);
  // The whole session is revoked: the current refresh token fails...
  const cur = await refreshRaw(strict, r2.body.refresh_token);
  assert.equal(cur.status, 400, `current refresh token must die too: ${cur.text}`);
  assert.ok(
    ['refresh_token_already_used', 'refresh_token_not_found', 'session_not_found'].includes(cur.body?.code),
    cur.text,
  );
  // ...and every access token of the session is dead.
  assertApiError(await getUserRaw(strict, r2.body.access_token), 403, 'session_not_found');
  assertApiError(await getUserRaw(strict, s0.access_token), 403, 'session_not_found');
  // The user's other session is untouched.
  const g = await getUserRaw(strict, other.data.session.access_token);
  assert.equal(g.status, 200, g.text);
  const r = await refreshRaw(strict, other.data.session.refresh_token);
  assert.equal(r.status, 200, r.text);

  // B: SPEC §6 — any reuse after the interval revokes the session, even of the active token's
  // parent (GoTrue would hand back the active token here; Tessera is stricter on purpose).
  const pReuse = await refreshRaw(strict, p0.refresh_token);
  assertApiError(pReuse, 400, 'refresh_token_already_used');
  assert.equal((await refreshRaw(strict, p1.body.refresh_token)).status, 400);
  assertApiError(await getUserRaw(strict, p1.body.access_token), 403, 'session_not_found');

  // C: with rotation disabled, the reuse is refused but the session is not revoked (GoTrue).
  const nReuse = await refreshRaw(norot, n0.refresh_token);
  assertApiError(nReuse, 400, 'refresh_token_already_used');
  const nCur = await refreshRaw(norot, n2.body.refresh_token);
  assert.equal(nCur.status, 200, nCur.text);
  assert.equal((await getUserRaw(norot, n2.body.access_token)).status, 200);
});

test('auth-js refreshes by itself when the token is about to expire (JWT_EXP=30)', async () => {
  const short = await startServer({ JWT_EXP: '30' });
  try {
    const { client, session } = await newUser(short);
    assert.equal(session.expires_in, 30);
    // auth-js treats a session expiring within 90 s as expired and refreshes it in getSession().
    const { data, error } = await client.getSession();
    assert.equal(error, null);
    assert.ok(data.session);
    assert.notEqual(data.session.refresh_token, session.refresh_token, 'getSession() should have refreshed');
    assert.equal((await getUserRaw(short, data.session.access_token)).status, 200);
  } finally {
    await finish(short);
  }
});

test('JWT_EXP below the 30 s floor is refused or raised to 30', async () => {
  let low;
  try {
    low = await startServer({ JWT_EXP: '5' });
  } catch (e) {
    assert.match(String(e.message), /JWT_EXP/i, 'a refusal should name the setting');
    return;
  }
  try {
    const { session } = await newUser(low);
    assert.ok(session.expires_in >= 30, `expires_in ${session.expires_in}`);
    const c = jwtPayload(session.access_token);
    assert.ok(c.exp - c.iat >= 30);
  } finally {
    await finish(low);
  }
});
