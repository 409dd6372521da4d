import { describe, expect, it } from 'vitest';
import { CLOSE_CODES } from '../../protocol/index.js';
import { TestClient } from './helpers.js';

/**
 * Regression (outside security review): on local workerd one client sending invalid frames got an error frame
 * for each, without bound (+1 GB). The shard now answers at most maxErrorsInRow of them and closes with 4002.
 */
describe('shard: per-connection bounds', () => {
  it('closes a connection that keeps sending invalid frames with 4002, after maxErrorsInRow error frames', async () => {
    const c = await TestClient.connect('flooder', 'd1');
    const bystander = await TestClient.connect('bystander', 'd1');
    for (let i = 0; i < 200; i++) c.ws.send(new Uint8Array([0xee, 1, 2]));
    await c.waitFor(() => c.closed !== null, 10_000);
    expect(c.closed?.code).toBe(CLOSE_CODES.too_many_errors);
    expect(c.of('error').filter((e) => e.code === 'unknown_type')).toHaveLength(20);
    // Someone else's connection never noticed.
    bystander.post('peer', 'still here', 'b1');
    await bystander.waitFor(() => bystander.of('send_ack').length === 1);
    expect(bystander.closed).toBeNull();
  });
});
