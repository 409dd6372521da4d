import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IrisClient, IrisError, type IrisMessage, type SocketInit, type WebSocketLike } from '../../client/index.js';
import { removeDir, sdkClient, startServer, token, waitFor, type ServerProcess } from './helpers.js';

/**
 * The SDK against a real on-prem server: why a refused handshake was refused (issue 7, finding 7), and sends
 * refused with rate_limited resent by the SDK itself (finding 8). The server has a small per-user bucket
 * (20 sends, 100/s) and no clock tolerance, so a token expires when its exp says.
 */

let server: ServerProcess;
let url: string;
let dataDir: string;

beforeAll(async () => {
  ({ server, url, dataDir } = await startServer({
    workers: 2,
    env: { IRIS_RATE_PER_SEC: '100', IRIS_RATE_BURST: '20', IRIS_JWT_CLOCK_TOLERANCE: '0' },
  }));
});

afterAll(async () => {
  await server?.stop();
  removeDir(dataDir);
});

/** The global WebSocket, with the sockets it made, so a test can cut one as a network failure would. */
function recordingWebSocket(): { sockets: WebSocketLike[]; WS: new (url: string, init: SocketInit) => WebSocketLike } {
  const sockets: WebSocketLike[] = [];
  const G = (globalThis as unknown as { WebSocket: new (url: string, protocols: string[]) => WebSocketLike }).WebSocket;
  class WS {
    constructor(u: string, init: SocketInit) {
      const ws = new G(u, Array.isArray(init) ? init : init.protocols);
      sockets.push(ws);
      return ws as unknown as WS;
    }
  }
  return { sockets, WS: WS as unknown as new (url: string, init: SocketInit) => WebSocketLike };
}

describe('refused handshakes, against a real server', () => {
  it('a token with a bad signature is auth_failed / invalid_signature, not a network failure', async () => {
    const c = new IrisClient({ url, token: await token('sig-alice', { secret: 'not-the-server-secret' }), device: 'd1' });
    const err = (await c.connect().catch((e: unknown) => e)) as IrisError;
    expect(err).toBeInstanceOf(IrisError);
    expect([err.code, err.status, err.reason]).toEqual(['auth_failed', 401, 'invalid_signature']);
    expect(c.state).toBe('closed');
  });

  it('a token that expires while connected: the next reconnect ends in auth_failed / token_expired, no endless retries', async () => {
    const exp = Math.floor(Date.now() / 1000) + 2;
    const expiring = await token('exp-alice', { expiresIn: exp });
    const { sockets, WS } = recordingWebSocket();
    const c = new IrisClient({ url, token: () => expiring, device: 'd1', WebSocket: WS, reconnect: { baseMs: 20, maxMs: 100 } });
    const errors: IrisError[] = [];
    c.on('error', (e) => void errors.push(e));
    await c.connect();
    await c.send('exp-bob', 'while valid');
    await waitFor('the token to expire', () => Date.now() > exp * 1000 + 50, 10_000);
    const late = c.send('exp-bob', 'never').catch((e: unknown) => e);
    sockets[0]!.close(); // the connection drops; the reconnect carries the expired token
    await waitFor('the client to give up', () => c.state === 'closed', 15_000);
    expect(errors.map((e) => [e.code, e.status, e.reason])).toEqual([['auth_failed', 401, 'token_expired']]);
    const e = (await late) as IrisError;
    expect([e.code, e.reason]).toEqual(['auth_failed', 'token_expired']);
    expect(sockets.length).toBe(2);
  });

  it('a token callback that hands out fresh tokens keeps the client connected across an expiry', async () => {
    let minted = 0;
    const exp = Math.floor(Date.now() / 1000) + 2;
    const { sockets, WS } = recordingWebSocket();
    const c = new IrisClient({
      url,
      token: () => token('fresh-alice', { expiresIn: ++minted === 1 ? exp : '1h' }),
      device: 'd1',
      WebSocket: WS,
      reconnect: { baseMs: 20, maxMs: 100 },
    });
    await c.connect();
    await waitFor('the first token to expire', () => Date.now() > exp * 1000 + 50, 10_000);
    await new Promise<void>((r) => {
      const off = c.on('state', (s) => {
        if (s === 'open') {
          off();
          r();
        }
      });
      sockets[0]!.close();
    });
    expect(c.state).toBe('open');
    // The connect, the refresh on the live connection at 80% of the first token's life (PROTOCOL.md 3.4), the reconnect.
    expect(minted).toBe(3);
    await c.close();
  });
});

describe('rate-limited sends are resent by the SDK', () => {
  it('a burst of 500 sends against a 20-token bucket: every send() resolves, all arrive once, in order', async () => {
    const N = 500;
    const b = sdkClient(url, 'burst-bob', 'b1');
    const got: IrisMessage[] = [];
    b.on('message', (m) => void got.push(m));
    await b.connect();
    const a = sdkClient(url, 'burst-alice', 'a1');
    let retries = 0;
    a.on('retry', () => void retries++);
    await a.connect();
    const acks = await Promise.all(Array.from({ length: N }, (_, i) => a.send('burst-bob', `r${i}`)));
    expect(acks).toHaveLength(N);
    expect(retries).toBeGreaterThan(0); // the bucket did refuse, and the SDK coped
    await waitFor('all messages', () => got.length >= N, 30_000);
    expect(got.map((m) => m.text())).toEqual(Array.from({ length: N }, (_, i) => `r${i}`));
    expect(got.map((m) => m.msg)).toEqual(acks.map((x) => x.msg));
    await a.close();
    await b.close();
  }, 60_000);

  it('with retry: false, send() still rejects with rate_limited and retryAfter', async () => {
    const a = sdkClient(url, 'optout-alice', 'a1', { retry: false });
    await a.connect();
    const results = await Promise.all(Array.from({ length: 60 }, (_, i) => a.send('optout-bob', `o${i}`).then(() => null, (e: unknown) => e as IrisError)));
    const refused = results.filter((r): r is IrisError => r !== null);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused[0]!.code).toBe('rate_limited');
    expect(refused[0]!.retryAfter).toBeGreaterThan(0);
    await a.close();
  });
});
