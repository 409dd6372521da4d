import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A push webhook receiver for the push tests of both profiles (test/onprem/push.test.ts,
 * test/conformance/cloudflare-push.test.ts): a node:http server on a free loopback port that records each call
 * and answers the statuses a test queues.
 */

export interface Received {
  body: string;
  payload: { user: string; device: string; sender: string; conversation: string; msg: string; count: number };
  signature: string;
  timestamp: string;
  status: number | 'hung';
}

/** The receiver an app's server would run: verifies the signature as docs/OPERATIONS.md shows, answers per `mode`. */
export class Receiver {
  readonly got: Received[] = [];
  /** Statuses to answer, in order; when empty 200. `hang`: never answer. */
  readonly script: (number | 'hang')[] = [];
  private readonly server: Server;
  private readonly hung: ServerResponse[] = [];

  constructor() {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        const next = this.script.shift() ?? 200;
        this.got.push({
          body,
          payload: JSON.parse(body) as Received['payload'],
          signature: String(req.headers['x-iris-signature']),
          timestamp: String(req.headers['x-iris-timestamp']),
          status: next === 'hang' ? 'hung' : next,
        });
        if (next === 'hang') this.hung.push(res);
        else res.writeHead(next).end();
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/push`;
  }

  async close(): Promise<void> {
    for (const r of this.hung) r.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** The check docs/OPERATIONS.md gives a receiver: HMAC-SHA256 of `${timestamp}.${body}`, compared in constant time. */
export function verified(r: Received, secret: string): boolean {
  const want = Buffer.from(`sha256=${createHmac('sha256', secret).update(`${r.timestamp}.${r.body}`).digest('hex')}`);
  const got = Buffer.from(r.signature);
  return want.length === got.length && timingSafeEqual(want, got) && Math.abs(Date.now() / 1000 - Number(r.timestamp)) < 300;
}
