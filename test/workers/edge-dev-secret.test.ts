import { env } from 'cloudflare:test';
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { DEV_SECRET } from '../../auth/index.js';
import { DEV_AUTH_COMBOS, devAuthVars, devSecretExpected } from '../fixtures/dev-auth-combos.js';
import type { Env } from '../../durable-objects/env.js';
import worker from '../../workers/edge.js';
import { edgeEnv, token } from './helpers.js';

/**
 * Regression (outside security review): the edge accepted the public development secret next to a JWKS
 * (`npm start -- --var IRIS_JWKS:...`). Every combination of secret / JWKS / JWKS URL / IRIS_DEV_MODE runs
 * through the real edge handler inside workerd; a stand-in USERS namespace records the hand-off, so "accepted"
 * means the edge passed the upgrade on to the user's shard.
 */

async function devToken(user: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuedAt(now).setExpirationTime(now + 600).sign(new TextEncoder().encode(DEV_SECRET));
}

async function connect(e: Env, tok: string): Promise<number> {
  const res = await worker.fetch(
    new Request('http://iris.test/v1/connect', { headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', Authorization: `Bearer ${tok}` } }),
    e,
  );
  return res.status;
}

describe('edge: the development secret', () => {
  it.each(DEV_AUTH_COMBOS)('secret=$secret jwks=$jwks jwksUrl=$jwksUrl IRIS_DEV_MODE=$dev', async (c) => {
    const vars = devAuthVars(c, { secret: 'test-secret', jwks: String(env['IRIS_JWKS']) });
    const keyed = c.secret || c.jwks || c.jwksUrl;
    const devAccepted = devSecretExpected(c);
    const handedOff: string[] = [];
    const e = edgeEnv(vars, handedOff);

    const status = await connect(e, await devToken('mallory'));
    // No key at all and no dev mode: auth is not configured (503); a key without a matching one: 401.
    expect(status).toBe(devAccepted ? 200 : keyed ? 401 : 503);
    expect(handedOff).toEqual(devAccepted ? ['mallory'] : []);

    const health = (await (await worker.fetch(new Request('http://iris.test/healthz'), e)).json()) as Record<string, unknown>;
    expect(health['devAuth'] === true).toBe(devAccepted);
    if (devAccepted) expect(String(health['warning'])).toContain('PUBLIC development secret');

    if (c.secret) expect(await connect(e, await token('alice'))).toBe(200);
  });
});
