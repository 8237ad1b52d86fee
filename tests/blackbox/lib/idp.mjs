// Outside identity providers for the black-box tests of issue 5 (external identities):
//
// - startIdp(): a real OpenID provider (npm `oidc-provider`) on a loopback port, with its own
//   RS256 and ES256 signing keys. Tokens come out of it through its real endpoints: the
//   authorization-code flow (with PKCE) driven by fetch, and the token endpoint. The one piece
//   we provide is the interaction (login + consent) step: instead of the HTML forms of
//   `devInteractions` (whose markup and field names change between versions), our HTTP server
//   answers /interaction/:uid itself through the provider's documented API
//   (interactionDetails → Grant → interactionFinished), logging in the account named by the
//   request's `login_hint`. Everything else — the /auth redirects and cookies, the code, the
//   ID token (nonce, at_hash), the JWT access token for a resource indicator — is the
//   provider's own.
//
// - startMinter(): an independent minter built on `jose`, serving its own JWKS over loopback
//   HTTP with a fetch counter, ETag / If-None-Match (304), stop/restart and key rotation.

import http from 'node:http';
import { createHash, randomBytes, generateKeyPairSync } from 'node:crypto';
import { SignJWT, exportJWK, generateKeyPair, base64url } from 'jose';
import Provider from 'oidc-provider';

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

function closeServer(server) {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections?.();
  });
}

export const sha256hex = (s) => createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------------------------------------
// oidc-provider

/**
 * Starts an oidc-provider on 127.0.0.1. opts: {audience (the resource indicator whose access
 * tokens are JWTs: Tessera's API_EXTERNAL_URL), accounts: {id: claims}}.
 * Returns {issuer, jwksUri, clients: {rs, es}, accessTokenTTL (settable), authorize(), stop()}.
 */
export async function startIdp({ audience, accounts = {} } = {}) {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keys = [
    { ...rsa.privateKey.export({ format: 'jwk' }), kid: 'idp-rs256', alg: 'RS256', use: 'sig' },
    { ...ec.privateKey.export({ format: 'jwk' }), kid: 'idp-es256', alg: 'ES256', use: 'sig' },
  ];
  const redirectUri = 'http://127.0.0.1/callback';
  const clients = {
    rs: { client_id: 'tessera-test', client_secret: 'rs-secret-0123456789abcdef', alg: 'RS256' },
    es: { client_id: 'tessera-test-es', client_secret: 'es-secret-0123456789abcdef', alg: 'ES256' },
  };
  const state = { accessTokenTTL: 600, idTokenTTL: 600, accounts: { ...accounts } };
  const algOf = (clientId) => (clientId === clients.es.client_id ? 'ES256' : 'RS256');

  const httpServer = http.createServer();
  const port = await listen(httpServer);
  const issuer = `http://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    clients: Object.values(clients).map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'client_credentials'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: c.alg,
    })),
    jwks: { keys },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'groups'] },
    scopes: ['openid', 'email', 'profile', 'api'],
    findAccount: (ctx, id) => ({
      accountId: id,
      claims: () => ({ sub: id, ...(state.accounts[id] ?? {}) }),
    }),
    // Claims of the account also travel in the JWT access tokens (email, groups...), so that
    // Tessera's role predicates and provisioning have something to read.
    extraTokenClaims: (ctx, token) => (token.accountId ? { ...(state.accounts[token.accountId] ?? {}) } : undefined),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    pkce: { required: () => true },
    ttl: {
      IdToken: () => state.idTokenTTL,
      AccessToken: () => state.accessTokenTTL,
      ClientCredentials: () => state.accessTokenTTL,
      Interaction: () => 600,
      Grant: () => 3600,
      Session: () => 3600,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          if (resource !== audience) throw new Error(`unknown resource ${resource}`);
          return {
            scope: 'api',
            audience: resource,
            accessTokenTTL: state.accessTokenTTL,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: algOf(client.clientId) } },
          };
        },
      },
    },
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));
  const callback = provider.callback();

  httpServer.on('request', async (req, res) => {
    const m = /^\/interaction\/([^/?]+)/.exec(req.url);
    if (!m) return callback(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      const { params } = details;
      const accountId = params.login_hint;
      if (!accountId) throw new Error('login_hint (the account) is required');
      const grant = new provider.Grant({ accountId, clientId: params.client_id });
      grant.addOIDCScope(String(params.scope));
      if (params.resource) grant.addResourceScope(params.resource, 'api');
      const grantId = await grant.save();
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId }, consent: { grantId } },
        { mergeWithLastSubmission: false },
      );
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e?.stack ?? e));
    }
  });

  /**
   * The authorization-code flow with PKCE through the provider's endpoints. Returns the token
   * endpoint's answer {id_token, access_token, expires_in, token_type, scope}.
   * opts: {account, nonce?, client: 'rs'|'es', scope?, resource? (default: the audience)}
   */
  async function authorize({ account, nonce, client = 'rs', scope = 'openid email profile api', resource = audience }) {
    const c = clients[client];
    const verifier = base64url.encode(randomBytes(32));
    const challenge = base64url.encode(createHash('sha256').update(verifier).digest());
    const q = new URLSearchParams({
      client_id: c.client_id,
      response_type: 'code',
      scope,
      redirect_uri: redirectUri,
      state: randomBytes(8).toString('hex'),
      login_hint: account,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    });
    if (nonce !== undefined) q.set('nonce', nonce);
    if (resource) q.set('resource', resource);
    const jar = new Map();
    let url = `${issuer}/auth?${q}`;
    let code;
    for (let hop = 0; hop < 12 && !code; hop++) {
      const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
      const res = await fetch(url, { redirect: 'manual', headers: cookie ? { cookie } : {} });
      for (const sc of res.headers.getSetCookie()) {
        const [pair] = sc.split(';');
        const i = pair.indexOf('=');
        jar.set(pair.slice(0, i).trim(), pair.slice(i + 1));
      }
      const loc = res.headers.get('location');
      const body = await res.text();
      if (!loc) throw new Error(`oidc-provider flow stopped at ${url}: ${res.status} ${body.slice(0, 500)}`);
      const next = new URL(loc, url);
      if (next.href.startsWith(redirectUri)) {
        if (next.searchParams.get('error')) {
          throw new Error(`oidc-provider refused: ${next.searchParams.get('error')} ${next.searchParams.get('error_description')}`);
        }
        code = next.searchParams.get('code');
      }
      url = next.href;
    }
    if (!code) throw new Error('oidc-provider flow gave no code');
    const form = new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: redirectUri,
      client_id: c.client_id,
      client_secret: c.client_secret,
      code_verifier: verifier,
    });
    if (resource) form.set('resource', resource);
    const res = await fetch(`${issuer}/token`, { method: 'POST', body: form });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`oidc-provider /token: ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  /** client_credentials for the audience: a JWT access token whose sub is the client id. */
  async function clientCredentials(client = 'rs') {
    const c = clients[client];
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: c.client_id,
      client_secret: c.client_secret,
      scope: 'api',
      resource: audience,
    });
    const res = await fetch(`${issuer}/token`, { method: 'POST', body: form });
    const json = await res.json();
    if (res.status !== 200) throw new Error(`oidc-provider /token (client_credentials): ${res.status} ${JSON.stringify(json)}`);
    return json;
  }

  const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  return {
    issuer,
    jwksUri: discovery.jwks_uri,
    discovery,
    clients,
    state,
    authorize,
    clientCredentials,
    stop: () => closeServer(httpServer),
  };
}

// ---------------------------------------------------------------------------------------------
// The jose minter

const ALGS = {
  RS256: { gen: 'RS256' },
  RS384: { gen: 'RS384' },
  RS512: { gen: 'RS512' },
  PS256: { gen: 'PS256' },
  ES256: { gen: 'ES256' },
  ES384: { gen: 'ES384' },
  EdDSA: { gen: 'EdDSA', opts: { crv: 'Ed25519' } },
};

/** A fresh signing key: {alg, kid, privateKey, publicKey, jwk (public, with kid/alg/use)}. */
export async function makeKey(alg, kid = `${alg.toLowerCase()}-${randomBytes(4).toString('hex')}`) {
  const spec = ALGS[alg];
  if (!spec) throw new Error(`unknown alg ${alg}`);
  const { privateKey, publicKey } = await generateKeyPair(spec.gen, { extractable: true, ...(spec.opts ?? {}) });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicKey, jwk };
}

/**
 * A JWKS server on 127.0.0.1 serving `keys` (public JWKs). It counts the requests it answered
 * (fetches: 200s; notModified: 304s; conditional: requests carrying If-None-Match), sets an
 * ETag derived from the set, and can be stopped and restarted on the same port.
 */
export async function startJwksServer(initial = [], { maxAge } = {}) {
  const st = {
    keys: initial.slice(),
    fetches: 0,
    notModified: 0,
    conditional: 0,
    requests: [],
    delayMs: 0,
  };
  const etagOf = () => `"${createHash('sha256').update(JSON.stringify(st.keys)).digest('hex').slice(0, 16)}"`;
  const handler = async (req, res) => {
    const inm = req.headers['if-none-match'];
    st.requests.push({ at: Date.now(), url: req.url, ifNoneMatch: inm ?? null });
    if (st.delayMs) await new Promise((r) => setTimeout(r, st.delayMs));
    const etag = etagOf();
    if (inm) st.conditional++;
    const headers = { etag };
    if (maxAge !== undefined) headers['cache-control'] = `max-age=${maxAge}`;
    if (inm && inm === etag) {
      st.notModified++;
      res.writeHead(304, headers);
      res.end();
      return;
    }
    st.fetches++;
    res.writeHead(200, { ...headers, 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: st.keys }));
  };
  let server = http.createServer(handler);
  const port = await listen(server);
  let up = true;
  const url = `http://127.0.0.1:${port}/jwks.json`;
  return {
    url,
    port,
    state: st,
    setKeys(keys) {
      st.keys = keys.slice();
    },
    addKey(k) {
      st.keys.push(k);
    },
    get fetches() {
      return st.fetches;
    },
    async stop() {
      if (!up) return;
      up = false;
      await closeServer(server);
    },
    async start() {
      if (up) return;
      server = http.createServer(handler);
      await new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', resolve);
      });
      up = true;
    },
    close() {
      return this.stop();
    },
  };
}

/** Signs claims with a key from makeKey(). header overrides go in `header` (kid: null drops it). */
export async function sign(key, claims, { header = {}, alg = key.alg } = {}) {
  const h = { alg, typ: 'JWT', kid: key.kid, ...header };
  if (h.kid === null) delete h.kid;
  return new SignJWT(claims).setProtectedHeader(h).sign(key.privateKey);
}

export const now = () => Math.floor(Date.now() / 1000);
