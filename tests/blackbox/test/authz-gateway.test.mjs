// GET /v1/authz/gateway behind a real nginx (issue 6): nginx's auth_request asks Tessera about
// every request to a tiny upstream (a node HTTP server that echoes the X-Tessera-* headers it
// received), with the route rules of TESSERA_GATEWAY_ROUTES. Covers: no token (401 at nginx),
// a role predicate on the document (own post 200, another's 403), a route no rule matches
// (403), a public route (200 without a token, forged X-Tessera-* headers dropped), a forged
// token (401), an admin key, and a role change taking effect without a new login.
//
// nginx is the Debian binary (scripts/deps.sh installs it), run as a child process on a free
// loopback port with everything it writes in a temporary directory. Without any nginx binary
// the tests are skipped with the reason.
import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startServer, finish, test, sleep, trackedFetch } from '../lib/server.mjs';
import { v1, setupKeys, createCollection, createDoc, expect, assertV1Error, login } from '../lib/v1.mjs';

// ---- nginx ----

function findNginx() {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin', '/usr/local/nginx/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, 'nginx');
    if (existsSync(p) && spawnSync(p, ['-v'], { encoding: 'utf8' }).status === 0) return p;
  }
  return null;
}
const NGINX = findNginx();
const SKIP = NGINX ? null : 'no nginx binary found (scripts/deps.sh installs Debian\'s nginx)';

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function nginxConf(dir, port, tesseraPort, upstreamPort) {
  // As root, nginx's workers would switch to nobody, who cannot enter the 0700 temp directory.
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  return `${user}
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path ${dir}/tmp_body;
    proxy_temp_path ${dir}/tmp_proxy;
    fastcgi_temp_path ${dir}/tmp_fastcgi;
    uwsgi_temp_path ${dir}/tmp_uwsgi;
    scgi_temp_path ${dir}/tmp_scgi;
    server {
        listen 127.0.0.1:${port};
        location = /_ready { return 204; }
        location = /_auth {
            internal;
            proxy_pass http://127.0.0.1:${tesseraPort}/v1/authz/gateway;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
        }
        location / {
            auth_request /_auth;
            auth_request_set $tessera_user $upstream_http_x_tessera_user;
            auth_request_set $tessera_collection $upstream_http_x_tessera_collection;
            auth_request_set $tessera_key $upstream_http_x_tessera_key;
            auth_request_set $tessera_role $upstream_http_x_tessera_role;
            proxy_set_header X-Tessera-User $tessera_user;
            proxy_set_header X-Tessera-Collection $tessera_collection;
            proxy_set_header X-Tessera-Key $tessera_key;
            proxy_set_header X-Tessera-Role $tessera_role;
            proxy_pass http://127.0.0.1:${upstreamPort};
        }
    }
}
`;
}

/** Starts nginx in front of the upstream; returns {url, stop(), errorLog()}. */
async function startNginx(tesseraPort, upstreamPort) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-nginx-'));
  let lastErr;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const conf = path.join(dir, 'nginx.conf');
    await writeFile(conf, nginxConf(dir, port, tesseraPort, upstreamPort));
    const child = spawn(NGINX, ['-c', conf, '-p', `${dir}/`, '-e', path.join(dir, 'error.log'), '-g', 'daemon off;'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    let exitInfo = null;
    const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exitInfo = { code, signal }))));
    child.on('error', (e) => (out += String(e)));
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline && !exitInfo) {
      try {
        const res = await fetch(`${url}/_ready`);
        await res.arrayBuffer();
        if (res.status === 204) break;
      } catch {
        // not listening yet
      }
      await sleep(25);
    }
    const errorLog = async () => readFile(path.join(dir, 'error.log'), 'utf8').catch(() => '');
    if (!exitInfo && Date.now() < deadline) {
      return {
        url,
        errorLog,
        async stop() {
          if (!exitInfo) {
            child.kill('SIGQUIT'); // graceful: the master stops its workers
            const t = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(t);
          }
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    if (!exitInfo) child.kill('SIGKILL');
    await exited;
    const log = `${out}\n${await errorLog()}`;
    lastErr = new Error(`nginx did not start (exit ${JSON.stringify(exitInfo)}):\n${log}`);
    if (!/Address already in use/i.test(log)) break;
  }
  await rm(dir, { recursive: true, force: true });
  throw lastErr;
}

/** The upstream: answers 200 with the method, URI and X-Tessera-* headers it received. */
async function startUpstream() {
  const srv = http.createServer((req, res) => {
    const tessera = {};
    for (const [k, v] of Object.entries(req.headers)) if (k.startsWith('x-tessera-')) tessera[k] = v;
    const body = JSON.stringify({ upstream: true, method: req.method, url: req.url, headers: tessera });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  return {
    port: srv.address().port,
    stop: () =>
      new Promise((resolve) => {
        srv.closeAllConnections?.();
        srv.close(() => resolve());
      }),
  };
}

// ---- fixtures ----

const ROUTES = [
  { route: 'GET /public/*', public: true },
  { route: 'GET /posts/{id}', resource: 'collections/posts/{id}', action: 'read' },
  { route: 'POST /blog/{id}/publish', resource: 'api/blog', action: 'publish' },
];
const OWNER_RULE = 'resource.data.owner == identity.id';
const bloggerRole = (read) => ({
  privileges: [
    { resource: 'collections/posts', actions: { read } },
    { resource: 'api/blog', actions: { publish: true } },
  ],
});
const PW = 'gateway password 1';

let routesDir;
let server;
let nginx;
let upstream;
let admin;
let adminKey;
let readonlyKey;
let alice; // a tst_ secret of people/alice (profile "writer": roles default + blogger)
let carol; // a tst_ secret of people/carol (no profiles: the "default" profile only)

before(async () => {
  if (SKIP) return;
  routesDir = await mkdtemp(path.join(os.tmpdir(), 'tessera-routes-'));
  const routes = path.join(routesDir, 'routes.json');
  await writeFile(routes, JSON.stringify(ROUTES));
  server = await startServer({ GATEWAY_ROUTES: routes });
  const keys = await setupKeys(server);
  admin = keys.admin;
  adminKey = admin.key;
  readonlyKey = keys.readonly.key;
  await createCollection(admin, 'people');
  await createCollection(admin, 'posts');
  expect(await admin.post('/v1/roles', { name: 'blogger', ...bloggerRole(OWNER_RULE) }), 201);
  expect(await admin.post('/v1/profiles', { name: 'writer', policies: [{ role: 'default' }, { role: 'blogger' }] }), 201);
  for (const [id, profiles] of [['alice', ['writer']], ['bob', ['writer']], ['carol', undefined]]) {
    await createDoc(admin, 'people', { id, data: profiles ? { profiles } : {}, credentials: { password: PW } });
    await createDoc(admin, 'posts', { id: `p-${id}`, data: { owner: id, title: `${id}'s post` } });
  }
  alice = (await login(server, { collection: 'people', id: 'alice', password: PW })).secret;
  carol = (await login(server, { collection: 'people', id: 'carol', password: PW })).secret;
  upstream = await startUpstream();
  nginx = await startNginx(new URL(server.url).port, upstream.port);
});

after(async () => {
  try {
    await nginx?.stop();
    await upstream?.stop();
    if (routesDir) await rm(routesDir, { recursive: true, force: true });
  } finally {
    if (server) await finish(server);
  }
});

/** A test that is skipped, with the reason, when there is no nginx. */
function gw(name, fn) {
  return test(name, async (t) => {
    if (SKIP) {
      t.skip(SKIP);
      return;
    }
    try {
      await fn(t);
    } catch (e) {
      const log = await nginx?.errorLog();
      if (log) t.diagnostic(`---- nginx error.log ----\n${log.split('\n').slice(-30).join('\n')}`);
      throw e;
    }
  });
}

/** A request through nginx. Returns {status, headers, text, body (parsed JSON or undefined)}. */
async function via(method, pathname, { token, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const res = await trackedFetch(nginx.url + pathname, { method, headers: h });
  const text = await res.text();
  let body;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, headers: res.headers, text, body, req: `${method} ${pathname}` };
}

function assertUpstream(res, expected) {
  assert.equal(res.status, 200, `${res.req} → ${res.status} ${res.text.slice(0, 300)}`);
  assert.equal(res.body?.upstream, true, `${res.req}: not the upstream's answer: ${res.text.slice(0, 300)}`);
  assert.deepEqual(res.body.headers, expected, `${res.req}: X-Tessera-* headers seen by the upstream`);
}

function assertDenied(res, status) {
  assert.equal(res.status, status, `${res.req} → ${res.status} ${res.text.slice(0, 300)}`);
  assert.ok(!res.text.includes('"upstream"'), `${res.req}: the upstream was reached`);
}

// ---- tests ----

gw('no token on a protected route: 401 at nginx, with WWW-Authenticate: Bearer', async () => {
  const res = await via('GET', '/posts/p-alice');
  assertDenied(res, 401);
  assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer\b/);
  assertDenied(await via('POST', '/blog/x/publish'), 401);
});

gw('a role predicate that allows: 200 from the upstream with the identity and the role', async () => {
  const expected = {
    'x-tessera-user': 'alice',
    'x-tessera-collection': 'people',
    'x-tessera-role': 'blogger',
  };
  assertUpstream(await via('GET', '/posts/p-alice', { token: alice }), expected);
  // the query string is not part of the route
  const q = await via('GET', '/posts/p-alice?draft=1&x=%2F', { token: alice });
  assertUpstream(q, expected);
  assert.equal(q.body.url, '/posts/p-alice?draft=1&x=%2F');
  // an api/<controller> action allowed by `true` (the static path), on another method
  const pub = await via('POST', '/blog/anything/publish', { token: alice });
  assertUpstream(pub, expected);
  assert.equal(pub.body.method, 'POST');
});

gw('the same token on another identity\'s document, or on a missing one: 403', async () => {
  assertDenied(await via('GET', '/posts/p-bob', { token: alice }), 403);
  assertDenied(await via('GET', '/posts/p-nobody', { token: alice }), 403);
  // an identity whose profiles give no right on posts: 403 even on its own post
  assertDenied(await via('GET', '/posts/p-carol', { token: carol }), 403);
  assertDenied(await via('POST', '/blog/x/publish', { token: carol }), 403);
});

gw('a route that no rule matches: 403 with a valid token, 401 without one', async () => {
  for (const p of ['/other', '/posts', '/posts/p-alice/comments', '/blog/x/publish']) {
    // GET /blog/x/publish: the rule is for POST only
    assertDenied(await via('GET', p, { token: alice }), 403);
    assertDenied(await via('GET', p), 401);
  }
  assertDenied(await via('DELETE', '/posts/p-alice', { token: alice }), 403);
});

gw('a public route: 200 without a token, and X-Tessera-* headers sent by the client do not pass', async () => {
  const res = await via('GET', '/public/css/site.css?v=3', {
    headers: { 'X-Tessera-User': 'forged', 'X-Tessera-Role': 'admin' },
  });
  assertUpstream(res, {});
  assert.equal(res.body.url, '/public/css/site.css?v=3');
  assertUpstream(await via('GET', '/public/', {}), {});
  // public means no check at all: even a forged token passes
  assertUpstream(await via('GET', '/public/x', { token: `tst_${randomBytes(24).toString('base64url')}` }), {});
  // but only for GET
  assertDenied(await via('POST', '/public/x'), 401);
});

gw('an invalid or forged token on a protected route: 401', async () => {
  const forged = [
    `tst_${randomBytes(24).toString('base64url')}`,
    `tsk_${randomBytes(24).toString('base64url')}`,
    `${alice.slice(0, -2)}${alice.endsWith('AA') ? 'BB' : 'AA'}`,
    'garbage',
  ];
  for (const token of forged) {
    const res = await via('GET', '/posts/p-alice', { token });
    assertDenied(res, 401);
    assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer\b/);
  }
  // even with a forged identity header
  assertDenied(await via('GET', '/posts/p-alice', { token: forged[0], headers: { 'X-Tessera-User': 'alice' } }), 401);
});

gw('an admin key: 200 with X-Tessera-Key and the admin role', async () => {
  assertUpstream(await via('GET', '/posts/p-bob', { token: adminKey.secret }), {
    'x-tessera-key': adminKey.id,
    'x-tessera-role': 'admin',
  });
});

gw('built-in key roles keep their rights: server-readonly reads documents, but has no right on a service\'s own controller', async () => {
  assertUpstream(await via('GET', '/posts/p-bob', { token: readonlyKey.secret }), {
    'x-tessera-key': readonlyKey.id,
    'x-tessera-role': 'server-readonly',
  });
  assertDenied(await via('POST', '/blog/p-bob/publish', { token: readonlyKey.secret }), 403);
});

gw('ambiguous paths are refused, not guessed: dot segments, encoded separators, ";", "//"; escapes are decoded before matching', async () => {
  const g = (uri, token) => v1(server, 'GET', '/v1/authz/gateway', { as: token, headers: { 'X-Original-Method': 'GET', 'X-Original-URI': uri } });
  for (const uri of ['/public/../posts/p-alice', '/public/%2e%2e/posts/p-alice', '/public/..;/posts/p-alice',
    '/public/./x', '//posts/p-alice', '/public//x', '/public/%2fx', '/public/a%5cb', '/public/%00', '/public/%zz', '/public/a\\b']) {
    const res = await g(uri);
    assert.equal(res.status, 403, `${uri}: ${res.status} ${res.text}`);
  }
  // decoded before matching: /%70osts/p-alice is /posts/p-alice, and still needs the right
  assert.equal((await g('/%70osts/p-alice')).status, 401);
  const ok = await g('/%70osts/p-alice', alice);
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.headers.get('x-tessera-user'), 'alice');
  // a trailing slash is ignored: /posts/p-alice/ is /posts/p-alice
  assert.equal((await g('/public/')).status, 200);
  assert.equal((await g('/posts/p-alice/', alice)).status, 200);
  assert.equal((await g('/posts/p-bob/', alice)).status, 403);
});

gw('the gateway itself: a missing X-Original-* header is a 400 JSON error', async () => {
  const g = (headers) => v1(server, 'GET', '/v1/authz/gateway', { as: alice, headers });
  assertV1Error(await g({ 'X-Original-URI': '/posts/p-alice' }), 400, 'invalid_request');
  assertV1Error(await g({ 'X-Original-Method': 'GET' }), 400, 'invalid_request');
  const ok = await g({ 'X-Original-Method': 'GET', 'X-Original-URI': '/posts/p-alice' });
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.text, '');
  assert.equal(ok.headers.get('x-tessera-user'), 'alice');
  assert.equal(ok.headers.get('x-tessera-role'), 'blogger');
});

gw('a role change (PUT /v1/roles/blogger) applies to the next request, without a new login', async () => {
  assertDenied(await via('GET', '/posts/p-bob', { token: alice }), 403);
  try {
    expect(await admin.put('/v1/roles/blogger', bloggerRole(true)), 200);
    assertUpstream(await via('GET', '/posts/p-bob', { token: alice }), {
      'x-tessera-user': 'alice',
      'x-tessera-collection': 'people',
      'x-tessera-role': 'blogger',
    });
    expect(await admin.put('/v1/roles/blogger', bloggerRole(false)), 200);
    assertDenied(await via('GET', '/posts/p-alice', { token: alice }), 403);
    assertDenied(await via('GET', '/posts/p-bob', { token: alice }), 403);
  } finally {
    expect(await admin.put('/v1/roles/blogger', bloggerRole(OWNER_RULE)), 200);
  }
  assertUpstream(await via('GET', '/posts/p-alice', { token: alice }), {
    'x-tessera-user': 'alice',
    'x-tessera-collection': 'people',
    'x-tessera-role': 'blogger',
  });
  assertDenied(await via('GET', '/posts/p-bob', { token: alice }), 403);
});
