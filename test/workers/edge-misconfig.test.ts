import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Env } from '../../durable-objects/env.js';
import worker from '../../workers/edge.js';
import { edgeEnv, token } from './helpers.js';

/**
 * A setting the schema (core/settings.ts) refuses makes the edge answer 503 `misconfigured` naming it, on
 * /v1/connect and /healthz, and logs it once per isolate. Before, on Cloudflare: a clock tolerance of "soon"
 * reached jose (every token refused as if malformed), IRIS_JWKS that is not JSON threw inside the request
 * (500 on every connect), and a cap of 1.5 was taken. On-prem refuses the same values at start-up
 * (test/onprem/units.test.ts).
 */

const GOOD = { IRIS_JWT_SECRET: 'test-secret', IRIS_JWT_ISSUER: 'https://issuer.test', IRIS_JWT_AUDIENCE: 'iris-test' };

async function connect(e: Env): Promise<Response> {
  const tok = await token('alice');
  return worker.fetch(new Request('http://iris.test/v1/connect', { headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', Authorization: `Bearer ${tok}` } }), e);
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('edge: a misconfigured setting', () => {
  it.each([
    ['IRIS_JWT_CLOCK_TOLERANCE', 'soon'],
    ['IRIS_JWT_CLOCK_TOLERANCE', '-1'],
    ['IRIS_JWKS', '{"keys": ['],
    ['IRIS_JWKS', '{"kty":"RSA"}'],
    ['IRIS_JWKS_URL', 'not a url'],
    ['IRIS_INBOX_CAP', '1.5'],
    ['IRIS_RATE_PER_SEC', 'fast'],
    ['IRIS_DEV_MODE', 'yes'],
    ['IRIS_TRUST_CF_CONNECTING_IP', 'yes'],
  ])('%s=%s: 503 misconfigured on connect and /healthz, logged once, nothing handed to a shard', async (name, value) => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => {});
    const handedOff: string[] = [];
    const e = edgeEnv({ ...GOOD, [name]: value }, handedOff);

    for (let i = 0; i < 3; i++) {
      const res = await connect(e);
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBeNull();
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error).toBe('misconfigured');
      expect(body.message).toContain(`${name} `);
    }
    const health = await worker.fetch(new Request('http://iris.test/healthz'), e);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { error: string }).error).toBe('misconfigured');
    expect(handedOff).toEqual([]);
    const logged = errors.mock.calls.map((c) => String(c[0]));
    expect(logged.length).toBe(1);
    expect(logged[0]).toContain(name);

    // Fixed (a new deployment is a new env): served again, nothing more logged.
    const fixed = edgeEnv({ ...GOOD }, handedOff);
    expect((await connect(fixed)).status).toBe(200);
    expect(handedOff).toEqual(['alice']);
    expect(errors.mock.calls.length).toBe(1);
  });

  it('takes the values the schema allows, including numbers and a JWKS table from wrangler [vars]', async () => {
    const handedOff: string[] = [];
    const jwks = { keys: [{ kty: 'oct', k: 'c2VjcmV0', alg: 'HS256' }] };
    const e = edgeEnv({ ...GOOD, IRIS_JWT_CLOCK_TOLERANCE: 0, IRIS_INBOX_CAP: 20, IRIS_RATE_PER_SEC: '0.5', IRIS_JWKS: jwks, IRIS_TRUST_CF_CONNECTING_IP: 'auto' }, handedOff);
    expect((await connect(e)).status).toBe(200);
    expect(handedOff).toEqual(['alice']);
  });

  it('an unknown path is still 404, whatever the settings', async () => {
    const res = await worker.fetch(new Request('http://iris.test/nope'), edgeEnv({ ...GOOD, IRIS_INBOX_CAP: 'x' }, []));
    expect(res.status).toBe(404);
  });
});
