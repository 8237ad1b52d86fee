// supabase-js createClient(url, anonKey).auth through /auth/v1 (issue item 8).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import {
  startServer,
  finish,
  test,
  uniqueEmail,
  recordingFetch,
  api,
  assertApiError,
} from '../lib/server.mjs';

// Node 20 has no WebSocket; realtime is never used here, so give it a transport that refuses.
class NoWebSocket {
  constructor() {
    throw new Error('realtime is not used by these tests');
  }
}

let server;

before(async () => {
  server = await startServer({ MAILER_AUTOCONFIRM: 'true' });
});

after(async () => {
  await finish(server);
});

function supabase(log) {
  return createClient(server.url, server.anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false,
      storageKey: `sb-supabase-js-${Math.random()}` },
    global: { fetch: recordingFetch(log) },
    realtime: { transport: NoWebSocket },
  });
}

test('signUp, signInWithPassword, getUser, signOut through supabase-js', async () => {
  const log = [];
  const sb = supabase(log);
  const email = uniqueEmail('sbjs');
  const password = 'correct-horse-1';

  const su = await sb.auth.signUp({ email, password, options: { data: { via: 'supabase-js' } } });
  assert.equal(su.error, null);
  assert.ok(su.data.session);
  assert.equal(su.data.user.email, email);
  assert.equal(su.data.user.user_metadata.via, 'supabase-js');

  const sb2 = supabase(log);
  const si = await sb2.auth.signInWithPassword({ email, password });
  assert.equal(si.error, null);
  assert.equal(si.data.user.id, su.data.user.id);
  const token = si.data.session.access_token;

  const me = await sb2.auth.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.email, email);

  const sess = await sb2.auth.getSession();
  assert.equal(sess.data.session.access_token, token);

  const out = await sb2.auth.signOut();
  assert.equal(out.error, null);
  assert.equal((await sb2.auth.getSession()).data.session, null);
  assertApiError(await api(server, 'GET', '/auth/v1/user', { token }), 403, 'session_not_found');

  // Every request went through /auth/v1 and carried the anon apikey.
  assert.ok(log.length >= 4, `requests: ${log.map((r) => r.path).join(' ')}`);
  for (const r of log) {
    assert.ok(r.path.startsWith('/auth/v1/'), `path ${r.path}`);
    assert.equal(r.headers.get('apikey'), server.anonKey);
  }
  const paths = log.map((r) => `${r.method} ${r.path}${r.search}`);
  assert.ok(paths.includes('POST /auth/v1/signup'), paths.join('\n'));
  assert.ok(paths.includes('POST /auth/v1/token?grant_type=password'), paths.join('\n'));
  assert.ok(paths.includes('GET /auth/v1/user'), paths.join('\n'));
  assert.ok(paths.includes('POST /auth/v1/logout?scope=global'), paths.join('\n'));
});

test('supabase-js sees error codes: wrong password, duplicate signup', async () => {
  const sb = supabase([]);
  const email = uniqueEmail('sbjs-err');
  assert.equal((await sb.auth.signUp({ email, password: 'correct-horse-1' })).error, null);
  const dup = await supabase([]).auth.signUp({ email, password: 'correct-horse-1' });
  assert.equal(dup.error?.code, 'user_already_exists');
  assert.equal(dup.error?.status, 422);
  const bad = await supabase([]).auth.signInWithPassword({ email, password: 'wrong-horse-1' });
  assert.equal(bad.error?.code, 'invalid_credentials');
  assert.equal(bad.error?.status, 400);
});

test('supabase-js refreshSession and updateUser through /auth/v1', async () => {
  const sb = supabase([]);
  const email = uniqueEmail('sbjs-refresh');
  const su = await sb.auth.signUp({ email, password: 'correct-horse-1' });
  assert.equal(su.error, null);
  const r = await sb.auth.refreshSession();
  assert.equal(r.error, null);
  assert.notEqual(r.data.session.refresh_token, su.data.session.refresh_token);
  const up = await sb.auth.updateUser({ data: { color: 'green' } });
  assert.equal(up.error, null);
  assert.equal(up.data.user.user_metadata.color, 'green');
});
