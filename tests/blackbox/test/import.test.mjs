// tessera import gotrue (issue 3): users of a GoTrue-shaped `auth` schema, made here with real
// bcrypt hashes as GoTrue stores them, sign in through auth-js with their old passwords.
// Defined on PostgreSQL only (the source is always a PostgreSQL database).
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PG, BIN, startServer, finish, test, makeClient, api, getUserRaw } from '../lib/server.mjs';

const ids = {
  ada: '11111111-1111-4111-8111-111111111111',
  bob: '22222222-2222-4222-8222-222222222222',
  oauth: '33333333-3333-4333-8333-333333333333',
  gone: '44444444-4444-4444-8444-444444444444',
};
// bcrypt of "old-password-2" ($2a$, as Go's bcrypt writes) and of "old-password-1" ($2b$).
const adaHash = '$2a$04$RHEL8bDbtACpvtAvaFNiNOODd4oW7OA329SRVsBtLAtGjMlTVwlG.';
const bobHash = '$2b$04$ZQkR6FjAHgQcwqbKSh31Leh2owDHM4/1hNYTO/J1SVeZkWHE4frcm';

const gotrueSchema = `
CREATE SCHEMA auth;
CREATE TABLE auth.users (
  instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255), email varchar(255),
  encrypted_password varchar(255), email_confirmed_at timestamptz, invited_at timestamptz,
  confirmation_token varchar(255), confirmation_sent_at timestamptz, recovery_token varchar(255),
  recovery_sent_at timestamptz, last_sign_in_at timestamptz, raw_app_meta_data jsonb,
  raw_user_meta_data jsonb, is_super_admin boolean, created_at timestamptz, updated_at timestamptz,
  phone text UNIQUE DEFAULT NULL, phone_confirmed_at timestamptz, banned_until timestamptz,
  deleted_at timestamptz, is_anonymous boolean NOT NULL DEFAULT false);
CREATE TABLE auth.identities (
  provider_id text NOT NULL, user_id uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  identity_data jsonb NOT NULL, provider text NOT NULL, last_sign_in_at timestamptz,
  created_at timestamptz, updated_at timestamptz, id uuid PRIMARY KEY DEFAULT gen_random_uuid());
INSERT INTO auth.users (id, aud, role, email, encrypted_password, email_confirmed_at,
  raw_app_meta_data, raw_user_meta_data, created_at, updated_at, last_sign_in_at) VALUES
  ('${ids.ada}', 'authenticated', 'authenticated', 'Ada@Example.com', '${adaHash}', now() - interval '30 days',
   '{"provider":"email","providers":["email"],"plan":"pro"}', '{"name":"Ada"}',
   now() - interval '30 days', now() - interval '2 days', now() - interval '1 day'),
  ('${ids.bob}', 'authenticated', 'authenticated', 'bob@example.com', '${bobHash}', now() - interval '10 days',
   '{"provider":"email","providers":["email"]}', '{}', now() - interval '10 days', now() - interval '10 days', NULL),
  ('${ids.oauth}', 'authenticated', 'authenticated', 'oauth@example.com', '', now() - interval '5 days',
   '{"provider":"google","providers":["google"]}', '{"full_name":"O Auth"}', now() - interval '5 days', now(), NULL);
INSERT INTO auth.users (id, aud, role, email, encrypted_password, created_at, updated_at, deleted_at) VALUES
  ('${ids.gone}', 'authenticated', 'authenticated', 'gone@example.com', '${bobHash}', now(), now(), now());
INSERT INTO auth.identities (provider_id, user_id, identity_data, provider) VALUES
  ('${ids.ada}', '${ids.ada}', '{"sub":"${ids.ada}","email":"ada@example.com"}', 'email'),
  ('${ids.bob}', '${ids.bob}', '{"sub":"${ids.bob}","email":"bob@example.com"}', 'email'),
  ('10987654321', '${ids.oauth}', '{"sub":"10987654321","email":"oauth@example.com"}', 'google');
`;

let server;
let source;
let sourceUrl;

function pg(tool, args, input) {
  return execFileSync(tool, ['-h', PG.host, '-p', PG.port, '-U', 'postgres', ...args], {
    input,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

if (PG) {
  before(async () => {
    source = `gotrue_${randomBytes(5).toString('hex')}`;
    pg('createdb', [source]);
    pg('psql', ['-v', 'ON_ERROR_STOP=1', '-q', '-d', source], gotrueSchema);
    sourceUrl = `postgresql:///${source}?host=${encodeURIComponent(PG.host)}&port=${PG.port}&user=postgres`;
    server = await startServer({});
  });

  after(async () => {
    await finish(server);
    pg('dropdb', ['--force', '--if-exists', source]);
  });

  test('imported GoTrue users sign in through auth-js with their old passwords', async () => {
    const r = spawnSync(BIN, ['import', 'gotrue', sourceUrl], { env: server.env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /imported 3 users \(2 with a password\)/);
    assert.match(r.stdout, /1 deleted/);
    assert.match(r.stdout, /1 identities of other providers/);

    const { data, error } = await makeClient(server).signInWithPassword({
      email: 'ada@example.com',
      password: 'old-password-2',
    });
    assert.equal(error, null);
    assert.equal(data.user.id, ids.ada, 'the GoTrue id is kept');
    assert.equal(data.user.user_metadata.name, 'Ada');
    assert.equal(data.user.app_metadata.plan, 'pro');
    assert.ok(data.user.email_confirmed_at);
    // The bcrypt hash was replaced by argon2id at that sign-in; the password still works.
    const again = await makeClient(server).signInWithPassword({ email: 'ada@example.com', password: 'old-password-2' });
    assert.equal(again.error, null);
    const wrong = await makeClient(server).signInWithPassword({ email: 'ada@example.com', password: 'old-password-1' });
    assert.equal(wrong.error?.code, 'invalid_credentials');

    const bob = await makeClient(server).signInWithPassword({ email: 'bob@example.com', password: 'old-password-1' });
    assert.equal(bob.error, null);
    assert.equal((await getUserRaw(server, bob.data.session.access_token)).body.id, ids.bob);

    // The OAuth-only user came over without a password; the deleted one did not come.
    const oauth = await api(server, 'GET', `/admin/users/${ids.oauth}`, { token: server.serviceKey });
    assert.equal(oauth.status, 200);
    assert.equal(oauth.body.user_metadata.full_name, 'O Auth');
    assert.equal((await api(server, 'GET', `/admin/users/${ids.gone}`, { token: server.serviceKey })).status, 404);
  });

  test('running the import again skips the users already there', () => {
    const r = spawnSync(BIN, ['import', 'gotrue', sourceUrl], { env: server.env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /imported 0 users/);
    assert.match(r.stdout, /skipped 3 that exist already/);
  });

  test('an unreachable source fails cleanly', () => {
    const r = spawnSync(BIN, ['import', 'gotrue', `postgresql:///nope?host=${encodeURIComponent(PG.host)}&port=1&user=postgres`], {
      env: server.env,
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cannot connect to the source database/);
  });
}
