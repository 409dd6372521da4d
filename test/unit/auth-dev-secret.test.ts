import { SignJWT } from 'jose';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEV_AUTH_COMBOS, devAuthVars, devSecretExpected } from '../fixtures/dev-auth-combos.js';
import { AuthError, DEV_SECRET, TokenVerifier, authConfigFromEnv, devAuthDecision } from '../../auth/index.js';
import { ConfigError } from '../../core/settings.js';

/**
 * The development secret is public: a server that accepts it lets anyone be anyone. It may be accepted only
 * when development mode was asked for explicitly and no key of any kind is configured. This walks every
 * combination of the four settings through the one function both profiles build their verifier from.
 */

const jwks = JSON.stringify((JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/test-keys.json'), 'utf8')) as { jwks: unknown }).jwks);

async function hs256(user: string, secret: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(user).setIssuedAt(now).setExpirationTime(now + 600).sign(new TextEncoder().encode(secret));
}

async function accepts(v: TokenVerifier, token: string): Promise<boolean> {
  try {
    await v.verify(token);
    return true;
  } catch (e) {
    if (e instanceof AuthError) return false;
    throw e;
  }
}

describe('the development secret', () => {
  it.each(DEV_AUTH_COMBOS)('secret=$secret jwks=$jwks jwksUrl=$jwksUrl IRIS_DEV_MODE=$dev', async (c) => {
    const env = devAuthVars(c, { secret: 'a-real-secret', jwks });
    const keyed = c.secret || c.jwks || c.jwksUrl;
    const devAccepted = devSecretExpected(c);

    const cfg = authConfigFromEnv(env);
    expect(cfg.devAuth).toBe(devAccepted);
    expect(devAuthDecision(env)).toBe(keyed ? 'keys' : c.dev === '1' ? 'dev' : 'none');
    const v = new TokenVerifier(cfg);
    expect(await accepts(v, await hs256('mallory', DEV_SECRET))).toBe(devAccepted);
    if (c.secret) expect(await accepts(v, await hs256('alice', 'a-real-secret'))).toBe(true);
    if (!keyed && !devAccepted) expect(v.configured).toBe(false);
  });

  it('only an explicit 1 (or true) asks for development mode; anything else but 0 / false is refused', () => {
    // Refused rather than read as "off", the same on both profiles (core/settings.ts): never development mode.
    for (const dev of ['yes', 'on', '2', ' 1', 'TRUE']) {
      expect(devAuthDecision({ IRIS_DEV_MODE: dev }), dev).toBe('none');
      expect(() => authConfigFromEnv({ IRIS_DEV_MODE: dev }), dev).toThrow(ConfigError);
    }
    expect(authConfigFromEnv({ IRIS_DEV_MODE: 'true' }).devAuth).toBe(true);
    for (const dev of ['0', 'false']) expect(authConfigFromEnv({ IRIS_DEV_MODE: dev }).devAuth, dev).toBe(false);
  });

  it('flags a configured secret that is the public development secret itself', () => {
    expect(authConfigFromEnv({ IRIS_JWT_SECRET: DEV_SECRET }).devAuth).toBe(true);
  });
});
