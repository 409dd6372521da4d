import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { IrisClient, IrisError, type IrisClientOptions, type IrisMessage, type IrisReceipt, type SendAck } from '../../client/index.js';
import { decodeFrame, type Frame } from '../../protocol/index.js';

/** Polls until cond() is true; fails with `what` after timeoutMs. */
export async function waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What one client saw, in order. */
export class Seen {
  readonly messages: IrisMessage[] = [];
  readonly receipts: IrisReceipt[] = [];
  /** Messages an earlier process on the same store handed out but never finished ('recovered'). */
  readonly recovered: IrisMessage[] = [];
  readonly states: string[] = [];
  readonly errors: IrisError[] = [];

  constructor(c: IrisClient) {
    c.on('message', (m) => void this.messages.push(m));
    c.on('receipt', (r) => void this.receipts.push(r));
    c.on('recovered', (r) => void (r.kind === 'message' && this.recovered.push(r.message)));
    c.on('state', (s) => void this.states.push(s));
    c.on('error', (e) => void this.errors.push(e));
  }

  texts(from?: string): string[] {
    return this.messages.filter((m) => from === undefined || m.from === from).map((m) => m.text());
  }
}

/** Codes after which the same send may be retried (same id) once retryAfter has passed. */
const RETRYABLE = new Set(['rate_limited', 'inbox_full', 'outbox_full', 'unavailable']);

/**
 * Sends with explicit client ids and records the order in which the server accepted them (the order of the
 * send_acks, which is the order the server committed them). Transient refusals (rate_limited, inbox_full...)
 * are retried with the same id after retryAfter, so the suite also passes against a server with production
 * limits; per-conversation FIFO is then checked against the accepted order, which retries may reshuffle.
 */
export class Sender {
  /** Texts in the order their first ack arrived. */
  readonly accepted: string[] = [];
  retries = 0;
  private readonly textById = new Map<string, string>();
  private readonly acked = new Set<string>();
  private n = 0;
  private readonly prefix = uniqueRun();

  constructor(readonly client: IrisClient) {
    client.on('ack', (a) => {
      const t = this.textById.get(a.id);
      if (t === undefined || this.acked.has(a.id)) return;
      this.acked.add(a.id);
      this.accepted.push(t);
    });
  }

  async send(to: string, text: string, id = `${this.prefix}-${++this.n}`, deadlineMs = 60_000): Promise<SendAck> {
    this.textById.set(id, text);
    const end = Date.now() + deadlineMs;
    for (;;) {
      try {
        return await this.client.send(to, text, { id });
      } catch (e) {
        if (!(e instanceof IrisError) || !RETRYABLE.has(e.code) || Date.now() > end) throw e;
        this.retries++;
        await sleep(e.retryAfter ?? 100);
      }
    }
  }
}

export function uniqueRun(): string {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

/** Tracks clients a test created so they are closed afterwards whatever happened. */
export class ClientPool {
  private readonly clients: IrisClient[] = [];

  constructor(
    private readonly url: () => string,
    private readonly token: (user: string) => Promise<string>,
  ) {}

  make(user: string, extra: Partial<IrisClientOptions> = {}): IrisClient {
    const c = new IrisClient({
      url: this.url(),
      token: () => this.token(user),
      device: 'd1',
      reconnect: { baseMs: 100, maxMs: 1000 },
      // The suite measures the server: sends are pipelined and Sender retries transient refusals itself,
      // checking FIFO against the order the server accepted (the SDK's own retries, pipelined behind the
      // server's send barrier, are tested in test/unit and test/onprem).
      retry: false,
      ...extra,
    });
    this.clients.push(c);
    return c;
  }

  async closeAll(): Promise<void> {
    const cs = this.clients.splice(0);
    await Promise.all(cs.map((c) => c.close().catch(() => {})));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Raw protocol access, for what the SDK would never send.

export interface RawFrame {
  frame: Frame;
  /** true: arrived as a text (JSON) message; false: binary. */
  text: boolean;
}

/** A bare WebSocket speaking iris.v1, with the token as a subprotocol. */
export class RawSocket {
  readonly frames: RawFrame[] = [];
  readonly undecodable: unknown[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(private readonly ws: WebSocket) {
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('message', (ev: MessageEvent) => {
      const data: unknown = ev.data;
      try {
        if (typeof data === 'string') this.frames.push({ frame: decodeFrame(data), text: true });
        else if (data instanceof ArrayBuffer) this.frames.push({ frame: decodeFrame(new Uint8Array(data)), text: false });
        else this.undecodable.push(data);
      } catch (e) {
        this.undecodable.push(e);
      }
    });
    ws.addEventListener('close', (ev: CloseEvent) => {
      this.closed = { code: ev.code, reason: ev.reason };
    });
  }

  static open(url: string, token: string, timeoutMs = 10_000): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, ['iris.v1', `bearer.${token}`]);
      const raw = new RawSocket(ws);
      const timer = setTimeout(() => reject(new Error('raw socket: no open in time')), timeoutMs);
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        resolve(raw);
      });
      ws.addEventListener('close', (ev: CloseEvent) => {
        clearTimeout(timer);
        reject(new Error(`raw socket closed before open (${ev.code})`));
      });
    });
  }

  send(data: string | Uint8Array): void {
    this.ws.send(data);
  }

  /** Waits for the next frame after the `from`-th one that satisfies pred. */
  async next(pred: (f: RawFrame) => boolean, timeoutMs = 5_000, from = 0): Promise<RawFrame> {
    let found: RawFrame | undefined;
    await waitFor(() => (found = this.frames.slice(from).find(pred)) !== undefined || this.closed !== null, timeoutMs, 'a frame');
    if (!found) throw new Error(`raw socket closed (${this.closed?.code} ${this.closed?.reason}) before the expected frame`);
    return found;
  }

  close(): void {
    try {
      this.ws.close(1000);
    } catch {
      // already closed
    }
  }
}

export interface UpgradeResult {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * Sends a WebSocket upgrade request by hand and reports the HTTP status (101 if it upgraded). fetch() cannot
 * send `Upgrade`, and the WebSocket API hides the status, so this is how "refused before upgrade" is observed.
 */
export function upgradeRequest(wsUrl: string, opts: { headers?: Record<string, string>; query?: Record<string, string> } = {}): Promise<UpgradeResult> {
  const u = new URL(wsUrl);
  for (const [k, v] of Object.entries(opts.query ?? {})) u.searchParams.set(k, v);
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  const send = secure ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send({
      host: u.hostname,
      port: u.port || (secure ? 443 : 80),
      path: `${u.pathname}${u.search}`,
      method: 'GET',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        'Sec-WebSocket-Protocol': 'iris.v1',
        ...opts.headers,
      },
      timeout: 10_000,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 101, body: '', headers: res.headers });
    });
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('timeout', () => req.destroy(new Error('upgrade request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** GET <origin>/healthz of a ws:// URL until it answers 200. */
export async function waitHealthy(wsUrl: string, timeoutMs: number, alive?: () => string | null): Promise<void> {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = '/healthz';
  u.search = '';
  const end = Date.now() + timeoutMs;
  for (;;) {
    const dead = alive?.();
    if (dead) throw new Error(dead);
    try {
      const r = await fetch(u, { signal: AbortSignal.timeout(2_000) });
      if (r.ok) return;
    } catch {
      // not up yet
    }
    if (Date.now() > end) throw new Error(`${u.href} not healthy after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** The admin API secret of the suite's own servers (IRIS_ADMIN_SECRET; features/trust.ts). */
export const ADMIN_SECRET = 'conformance-admin-secret';
