import { SELF } from 'cloudflare:test';
import { expect, it } from 'vitest';

it('healthz answers', async () => {
  const r = await SELF.fetch('http://iris.test/healthz');
  expect(r.status).toBe(200);
});
