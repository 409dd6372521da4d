import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisMessage, SocketInit, WebSocketLike } from '../../client/index.js';
import { decodeFrame } from '../../protocol/index.js';
import { removeDir, sdkClient, startServer, waitFor, type ServerProcess } from './helpers.js';

/**
 * Pipelined sends against a real on-prem server with a small per-user bucket (docs/PROTOCOL.md 9.3: the
 * per-connection send barrier keeps the acceptance order of a pipelining client its send order). With the
 * default SDK options, 1,000 sends to one recipient all resolve, arrive once, in order, and with many sends in
 * flight at once instead of one round trip each. The timing is printed, not asserted. IRIS_TEST_RATE_PER_SEC /
 * IRIS_TEST_RATE_BURST override the bucket (e.g. 100000 to see round trips alone).
 */

let server: ServerProcess;
let url: string;
let dataDir: string;

beforeAll(async () => {
  ({ server, url, dataDir } = await startServer({ workers: 2, env: { IRIS_RATE_PER_SEC: process.env['IRIS_TEST_RATE_PER_SEC'] ?? '500', IRIS_RATE_BURST: process.env['IRIS_TEST_RATE_BURST'] ?? '100' } }));
});

afterAll(async () => {
  await server?.stop();
  removeDir(dataDir);
});

/** The global WebSocket, counting send frames written and their answers (send_ack / error with a ref). */
function countingWebSocket() {
  const stats = { written: 0, answered: 0, maxInFlight: 0, refused: 0 };
  const G = (globalThis as unknown as { WebSocket: new (url: string, protocols: string[]) => WebSocketLike }).WebSocket;
  class WS {
    constructor(u: string, init: SocketInit) {
      const ws = new G(u, Array.isArray(init) ? init : init.protocols);
      const send = ws.send.bind(ws);
      ws.send = (data: string | ArrayBuffer | ArrayBufferView) => {
        const f = decodeFrame(data as string | Uint8Array);
        if (f.t === 'send') {
          stats.written++;
          stats.maxInFlight = Math.max(stats.maxInFlight, stats.written - stats.answered);
        }
        send(data);
      };
      ws.addEventListener('message', (e: { data?: unknown }) => {
        const d = e.data;
        if (!(typeof d === 'string' || d instanceof ArrayBuffer)) return;
        const f = decodeFrame(typeof d === 'string' ? d : new Uint8Array(d));
        if (f.t === 'send_ack' || (f.t === 'error' && f.ref !== undefined)) stats.answered++;
        if (f.t === 'error' && f.ref !== undefined) stats.refused++;
      });
      return ws as unknown as WS;
    }
  }
  return { stats, WS: WS as unknown as new (url: string, init: SocketInit) => WebSocketLike };
}

describe('pipelined sends to one recipient', () => {
  it('1,000 sends with the default SDK options: all resolve, arrive once and in order, many in flight at once', async () => {
    const N = 1000;
    const b = sdkClient(url, 'pipe-bob', 'b1');
    const got: IrisMessage[] = [];
    b.on('message', (m) => void got.push(m));
    await b.connect();
    const { stats, WS } = countingWebSocket();
    const a = sdkClient(url, 'pipe-alice', 'a1', { WebSocket: WS, maxOutbox: N });
    let retries = 0;
    a.on('retry', () => void retries++);
    await a.connect();
    const t0 = performance.now();
    const acks = await Promise.all(Array.from({ length: N }, (_, i) => a.send('pipe-bob', `p${i}`)));
    const elapsed = performance.now() - t0;
    console.log(
      `iris send-pipeline: ${N} sends in ${elapsed.toFixed(0)} ms; ${stats.written} send frames written ` +
        `(${stats.refused} refused, ${retries} retry events), at most ${stats.maxInFlight} in flight`,
    );
    expect(acks).toHaveLength(N);
    expect(new Set(acks.map((x) => x.msg)).size).toBe(N);
    await waitFor('all messages', () => got.length >= N, 30_000);
    expect(got.map((m) => m.text())).toEqual(Array.from({ length: N }, (_, i) => `p${i}`));
    expect(got.map((m) => m.msg)).toEqual(acks.map((x) => x.msg));
    // Acceptance order is send order: the server's message numbers grow with the send() calls.
    const ns = acks.map((x) => Number(x.msg.split(':')[1]));
    expect(ns).toEqual([...ns].sort((x, y) => x - y));
    // Pipelined: far more than one send in flight at a time.
    expect(stats.maxInFlight).toBeGreaterThan(10);
    await a.close();
    await b.close();
  }, 60_000);
});
