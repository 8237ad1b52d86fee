// bench/ext_idp.mjs - a stand-in outside identity provider for bench/v1.sh: serves an RS256
// JWKS on 127.0.0.1:PORT and writes one signed JWT (iss ISSUER, aud AUDIENCE, sub bench-user,
// valid an hour) to OUT_FILE. Runs until killed.
// usage: node bench/ext_idp.mjs PORT ISSUER AUDIENCE OUT_FILE
import http from 'node:http';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '..', 'tests', 'blackbox', 'package.json'));
const { generateKeyPair, exportJWK, SignJWT } = await import(require.resolve('jose'));

const [port, issuer, audience, outFile] = process.argv.slice(2);
const { publicKey, privateKey } = await generateKeyPair('RS256');
const jwk = { ...(await exportJWK(publicKey)), kid: 'bench-1', alg: 'RS256', use: 'sig' };
const body = JSON.stringify({ keys: [jwk] });
http
  .createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(body);
  })
  .listen(Number(port), '127.0.0.1', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ email: 'bench@example.com' })
      .setProtectedHeader({ alg: 'RS256', kid: 'bench-1' })
      .setIssuer(issuer)
      .setSubject('bench-user')
      .setAudience(audience)
      .setIssuedAt(now)
      .setExpirationTime(now + 3600)
      .sign(privateKey);
    writeFileSync(outFile, token);
  });
