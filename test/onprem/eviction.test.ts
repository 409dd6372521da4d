import { describe, expect, it } from 'vitest';
import type { IrisMessage, IrisReceipt } from '../../client/index.js';
import { removeDir, scrape, sdkClient, startServer, usersOn, waitFor } from './helpers.js';

/**
 * Idle mailboxes leave memory (IRIS_MAILBOX_IDLE_MS) and come back from SQLite with nothing lost: messages
 * waiting for an offline user, and the receipt its sender is owed.
 */
describe('mailbox eviction', () => {
  it('forgets idle mailboxes and rebuilds them from storage', async () => {
    const { server, dataDir, url, port } = await startServer({ workers: 2, env: { IRIS_MAILBOX_IDLE_MS: '300' } });
    try {
      const [alice] = usersOn(0, 2, 'ev-a-');
      const [bob] = usersOn(1, 2, 'ev-b-');
      const a = sdkClient(url, alice!);
      await a.connect();
      const ack = await a.send(bob!, 'while you were away');
      await a.close();

      const inMemory = async () => {
        const m = await scrape(port);
        return (m.get('iris_mailboxes{worker="0"}') ?? 0) + (m.get('iris_mailboxes{worker="1"}') ?? 0);
      };
      expect(await inMemory()).toBeGreaterThan(0);
      await waitFor('every mailbox to be evicted', async () => (await inMemory()) === 0, 10_000, 200);

      const b = sdkClient(url, bob!);
      const got: IrisMessage[] = [];
      b.on('message', (m) => void got.push(m));
      await b.connect();
      await waitFor('bob gets the message', () => got.length === 1);
      expect(got[0]!.msg).toBe(ack.msg);

      const a2 = sdkClient(url, alice!);
      const receipts: IrisReceipt[] = [];
      a2.on('receipt', (r) => void receipts.push(r));
      await a2.connect();
      await waitFor('alice gets the receipt', () => receipts.length === 1);
      expect(receipts[0]!.msg).toBe(ack.msg);
      await Promise.all([a2.close(), b.close()]);
    } finally {
      expect((await server.stop()).code).toBe(0);
      removeDir(dataDir);
    }
  });
});
