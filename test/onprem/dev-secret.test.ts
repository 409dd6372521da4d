import { SignJWT, importJWK, type JWK } from 'jose';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEV_SECRET } from '../../auth/index.js';
import { freePort } from '../../scripts/lib/net.js';
import { RawClient, removeDir, runToExit, startServer, tempDir, token } from './helpers.js';

/**
 * Regression (outside security review): with a JWKS configured and IRIS_DEV_MODE left at its old on-prem
 * default, the public development secret was accepted too, so anyone could mint a token for any user. Each
 * case starts a real server with one combination and tries a token signed with the development secret.
 */

const keys = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/test-keys.json'), 'utf8')) as { jwks: unknown; private: Record<string, JWK> };
const JWKS = JSON.stringify(keys.jwks);

async function rs256(user: string): Promise<string> {
  const jwk = keys.private['RS256']!;
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: jwk.kid! }).setSubject(user).setIssuedAt(now).setExpirationTime(now + 600).sign(await importJWK(jwk, 'RS256'));
}

async function connects(url: string, tok: string): Promise<number> {
  try {
    (await RawClient.open(url, tok)).close();
    return 101;
  } catch (e) {
    const status = (e as { status?: number }).status;
    if (typeof status === 'number') return status;
    throw e;
  }
}

async function health(port: number): Promise<Record<string, unknown>> {
  return (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()) as Record<string, unknown>;
}

let jwksServer: Server;
let jwksUrl = '';
const dirs: string[] = [];

beforeAll(async () => {
  const port = await freePort();
  jwksServer = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JWKS));
  await new Promise<void>((r) => jwksServer.listen(port, '127.0.0.1', r));
  jwksUrl = `http://127.0.0.1:${port}/jwks.json`;
});
afterAll(() => {
  jwksServer.close();
  for (const d of dirs) removeDir(d);
});

const cases: { name: string; env: Record<string, string>; devAccepted: boolean }[] = [
  { name: 'JWKS, dev mode unset (the old hole)', env: { IRIS_JWKS: JWKS }, devAccepted: false },
  { name: 'JWKS and IRIS_DEV_MODE=1', env: { IRIS_JWKS: JWKS, IRIS_DEV_MODE: '1' }, devAccepted: false },
  { name: 'JWKS URL and IRIS_DEV_MODE=1', env: { IRIS_DEV_MODE: '1' }, devAccepted: false },
  { name: 'secret and IRIS_DEV_MODE=1', env: { IRIS_JWT_SECRET: 'a-real-secret', IRIS_DEV_MODE: '1' }, devAccepted: false },
  { name: 'no key and IRIS_DEV_MODE=1', env: { IRIS_DEV_MODE: '1' }, devAccepted: true },
];

describe('on-prem: the development secret is accepted only in explicit development mode without keys', () => {
  it.each(cases)('$name', async ({ name, env, devAccepted }) => {
    const e: Record<string, string> = { IRIS_JWT_SECRET: '', ...env };
    if (name.startsWith('JWKS URL')) e['IRIS_JWKS_URL'] = jwksUrl;
    const { server, dataDir, url, port } = await startServer({ workers: 1, env: e });
    dirs.push(dataDir);
    try {
      expect(await connects(url, await token('mallory', { secret: DEV_SECRET }))).toBe(devAccepted ? 101 : 401);
      const h = await health(port);
      expect(h['devAuth'] === true).toBe(devAccepted);
      if (devAccepted) {
        expect(server.stderr).toContain('DEVELOPMENT MODE');
        expect(String(h['warning'])).toContain('PUBLIC development secret');
      } else {
        expect(server.stderr).not.toContain('DEVELOPMENT MODE');
        if (env['IRIS_DEV_MODE'] === '1') expect(server.stderr).toContain('IRIS_DEV_MODE=1 is ignored');
        // The configured key still works.
        const good = env['IRIS_JWT_SECRET'] ? await token('alice', { secret: env['IRIS_JWT_SECRET'] }) : await rs256('alice');
        expect(await connects(url, good)).toBe(101);
      }
    } finally {
      expect((await server.stop()).code).toBe(0);
    }
  });

  it('without any key and without IRIS_DEV_MODE it refuses to start', async () => {
    const d = tempDir('iris-onprem-nokey-');
    dirs.push(d);
    const r = await runToExit(['--host', '127.0.0.1', '--port', String(await freePort()), '--data-dir', d, '--workers', '1'], { IRIS_JWT_SECRET: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no JWT key configured');
  });
});
