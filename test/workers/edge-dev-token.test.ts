import { env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { DEV_AUTH_COMBOS, devAuthVars, devSecretExpected } from '../fixtures/dev-auth-combos.js';
import worker from '../../workers/edge.js';
import { edgeEnv } from './helpers.js';

/**
 * The web chat's /dev/token on the edge (auth/dev-token.ts): it exists only where the public development secret
 * is accepted AND the request is addressed to a loopback host (`npm start`); everywhere else it is a 404 like
 * any unknown path. A token it gives connects. Every combination of keys and IRIS_DEV_MODE, through the real
 * edge handler in workerd.
 */

describe('edge: /dev/token', () => {
  it.each(DEV_AUTH_COMBOS)('secret=$secret jwks=$jwks jwksUrl=$jwksUrl IRIS_DEV_MODE=$dev', async (c) => {
    const handedOff: string[] = [];
    const e = edgeEnv(devAuthVars(c, { secret: 'test-secret', jwks: String(env['IRIS_JWKS']) }), handedOff);
    const local = await worker.fetch(new Request('http://127.0.0.1:8787/dev/token?user=web-amy'), e);
    // A dev-mode server reached through a public name: no tokens for the asking.
    const remote = await worker.fetch(new Request('http://iris.example.com/dev/token?user=web-amy'), e);
    expect(remote.status).toBe(404);
    if (!devSecretExpected(c)) {
      expect(local.status).toBe(404);
      return;
    }
    expect(local.status).toBe(200);
    const { token, user } = (await local.json()) as { token: string; user: string };
    expect(user).toBe('web-amy');
    const up = await worker.fetch(
      new Request('http://127.0.0.1:8787/v1/connect', { headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', Authorization: `Bearer ${token}` } }),
      e,
    );
    expect(up.status).toBe(200);
    expect(handedOff).toEqual(['web-amy']);
    expect((await worker.fetch(new Request('http://127.0.0.1:8787/dev/token?user=no%20spaces'), e)).status).toBe(400);
  });
});
