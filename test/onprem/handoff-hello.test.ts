import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { SUBPROTOCOL, decodeFrame, encodeFrame, type ServerFrame } from '../../protocol/index.js';
import { removeDir, scrape, startServer, token, usersOn, type ServerProcess } from './helpers.js';

/**
 * Regression: with socket hand-off, the bytes a client sends right after the 101 (its hello) must reach the
 * owner. They used to be read and thrown away by a process still holding a copy of the socket's descriptor
 * (the supervisor, or the accepting worker) until Node closed it on the hand-over's acknowledgement: ~5% of
 * moved connections got no welcome and were closed with 4000 (hello timeout). See stopReading in onprem/ipc.ts.
 *
 * Every connection here is opened at once, with hello sent the moment the socket opens, for users of both
 * workers: whichever worker the kernel picks, about half of them are accepted by the worker that does not own
 * the user and are handed over. Each one must get its welcome on the first attempt (no reconnect, no retry).
 * The only time bound is a generous one on the whole run.
 */

const PER_WORKER = 200;

interface Outcome {
  user: string;
  result: 'welcome' | string;
}

function connectAndHello(url: string, user: string, tok: string, boundMs: number): Promise<{ outcome: Outcome; ws: WebSocket }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${tok}` }, perMessageDeflate: false });
    let done = false;
    const finish = (result: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ outcome: { user, result }, ws });
    };
    const timer = setTimeout(() => finish(`no welcome within ${boundMs} ms`), boundMs);
    ws.on('open', () => ws.send(encodeFrame({ t: 'hello', device: 'd1', cursor: 0 }, 'binary')));
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      const f = decodeFrame(isBinary ? new Uint8Array(data) : data.toString('utf8')) as ServerFrame;
      finish(f.t === 'welcome' ? 'welcome' : `got ${f.t} before welcome`);
    });
    ws.on('unexpected-response', (_req, res) => finish(`HTTP ${res.statusCode}`));
    ws.on('close', (code: number) => finish(`closed ${code} before welcome`));
    ws.on('error', (e: Error) => finish(`error ${e.message}`));
  });
}

describe('socket hand-off keeps the bytes sent right after the 101', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let port: number;

  beforeAll(async () => {
    // Default route (handoff) and default hello timeout: a lost hello shows as "closed 4000 before welcome".
    ({ server, dataDir, url, port } = await startServer({ workers: 2 }));
  });

  afterAll(async () => {
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it(`welcomes all ${2 * PER_WORKER} concurrent connections on their first attempt, most of them moved to their owner`, async () => {
    const users = [...usersOn(0, 2, 'hh-a-', PER_WORKER), ...usersOn(1, 2, 'hh-b-', PER_WORKER)];
    const toks = await Promise.all(users.map((u) => token(u)));
    const results = await Promise.all(users.map((u, i) => connectAndHello(url, u, toks[i]!, 30_000)));
    try {
      const failed = results.map((r) => r.outcome).filter((o) => o.result !== 'welcome');
      expect(failed).toEqual([]);

      const m = await scrape(port);
      const open = (w: number) => m.get(`iris_connections{worker="${w}"}`) ?? 0;
      expect(open(0) + open(1)).toBe(2 * PER_WORKER);
      const moved = (m.get('iris_connections_opened_total{via="handoff",worker="0"}') ?? 0) + (m.get('iris_connections_opened_total{via="handoff",worker="1"}') ?? 0);
      const local = (m.get('iris_connections_opened_total{via="local",worker="0"}') ?? 0) + (m.get('iris_connections_opened_total{via="local",worker="1"}') ?? 0);
      expect(moved + local).toBe(2 * PER_WORKER);
      // The kernel spreads connections over both listeners: about half are moved. (Fewer than a quarter
      // would mean the test did not exercise the hand-off; the odds of that by chance are negligible.)
      expect(moved).toBeGreaterThan(PER_WORKER / 2);
      expect(m.get('iris_closes_total{code="4000",worker="0"}') ?? 0).toBe(0);
      expect(m.get('iris_closes_total{code="4000",worker="1"}') ?? 0).toBe(0);
    } finally {
      for (const r of results) r.ws.terminate();
    }
  });
});
