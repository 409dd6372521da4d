import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { upgradeRequest } from './helpers.js';
import type { Target } from './suite.js';
import { startWrangler } from './wrangler-target.js';

/**
 * A local run of the Cloudflare profile (wrangler dev, as `npm start` runs it): the per-IP connect limit
 * (CONNECT_LIMITER, 600 per minute) cannot be dodged by sending a different CF-Connecting-IP each time.
 * Its own server, since it spends the whole budget of this machine for a minute.
 */
describe('cloudflare (wrangler dev): per-IP connect limit', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startWrangler();
  }, 120_000);
  afterAll(async () => {
    await target?.stop();
  }, 60_000);

  it('a client-sent CF-Connecting-IP gets no fresh bucket', async () => {
    let status = 0;
    // Fixed windows of 60 s: 1,400 tries reach 600 in one window even if a boundary passes.
    for (let i = 0; i < 1400 && status !== 429; i++) {
      ({ status } = await upgradeRequest(target.url, { headers: { 'CF-Connecting-IP': `198.51.100.${i % 250}` } }));
    }
    expect(status).toBe(429);
    // And a client that sends no such header is the same machine: refused too.
    expect((await upgradeRequest(target.url)).status).toBe(429);
  });
});
