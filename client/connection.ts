import { CLOSE_CODES, HELLO_FEATURES, PING_TEXT, ProtocolError, decodeFrame, encodeFrame } from '../protocol/index.js';
import type { ClientFrame, ErrorFrame, ServerFrame, Welcome as WireWelcome } from '../protocol/index.js';
import { IrisError, errText } from './errors.js';
import { FATAL_HELLO_ERRORS, createSocket, probeRefusal } from './handshake.js';
import { startHeartbeat } from './heartbeat.js';
import type { Link, LinkSource } from './link.js';
import { ReconnectPolicy } from './reconnect.js';
import { TokenRefresher, closedForToken } from './token-refresh.js';
import { binaryOf, defaultWebSocket, describeErrorEvent, type ProbeResult, type WebSocketConstructor, type WebSocketLike } from './socket.js';
import type { ConnectionState, IrisClientOptions, Welcome } from './types.js';

export type ConnectionOptions = Pick<
  IrisClientOptions,
  'url' | 'token' | 'device' | 'encoding' | 'tokenTransport' | 'reconnect' | 'WebSocket' | 'heartbeatMs' | 'connectTimeoutMs' | 'probeRefusals' | 'fetch'
>;

/**
 * Where a connection's life meets the rest of the client. Called in this order for one socket: prepare, hello,
 * welcomed, opened, frame (any number), down; stopped only when the connection gives up for good.
 */
export interface ConnectionHooks {
  /** Before every attempt (the client loads its store here); a rejection ends the connection. */
  prepare(): Promise<void>;
  /** What the hello of a socket that just opened carries. */
  hello(): { cursor: number; receipts: number; reads: number };
  /** The server welcomed socket `gen`, before anyone sees state 'open' (delivery resumes at the welcome cursor). */
  welcomed(gen: number, welcome: Welcome, helloCursor: number): void;
  /** After state 'open' and connect() resolved: write what waited for a connection. */
  opened(welcome: Welcome): void;
  /** Any other frame from the current socket (the welcome, and error frames before it, are this class's own). */
  frame(f: ServerFrame, gen: number): void;
  /** The current socket is gone, or about to be: stop per-socket work. */
  down(): void;
  /** The connection stopped for good with this error (connect() waiters have been rejected with it already). */
  stopped(err: IrisError): void;
  state(s: ConnectionState): void;
  /** Connection failures nobody waits for, and undecodable frames. */
  error(e: IrisError): void;
  /** Runs `task` after the deliveries queued so far (frames that must be decoded asynchronously keep their order). */
  inOrder(task: () => Promise<void>): void;
}

/** One WebSocket attempt and what the connection knows about it. */
interface Sock {
  ws: WebSocketLike;
  gen: number;
  token: string;
  link: Link;
  opened: boolean;
  welcomed: boolean;
  lastRx: number;
  lastTx: number;
  /** Cursor the hello carried. */
  helloCursor: number;
  errorText: string;
  /** An error frame that answered the hello. */
  refusal: ErrorFrame | null;
  closed: Promise<void>;
}

/**
 * One WebSocket at a time and its whole life: open with a (possibly refreshed) token, hello, welcome,
 * heartbeat, and after a drop a reconnect with backoff, unless the cause is final (refused token, replaced by
 * another connection of the device, fatal hello refusal, or a failed first attempt).
 */
export class Connection implements LinkSource {
  private readonly WS: WebSocketConstructor;
  private readonly heartbeatMs: number;
  private phase: ConnectionState | 'idle' = 'idle';
  /** The app wants a connection (connect() called, close() not, not given up). */
  private wanted = false;
  /** A welcome arrived since connect() was called: later failures reconnect instead of rejecting connect(). */
  private everOpened = false;
  private sock: Sock | null = null;
  private gen = 0;
  private readonly policy: ReconnectPolicy;
  private welcome: Welcome | null = null;
  private connectWaiters: { resolve: (w: Welcome) => void; reject: (e: IrisError) => void }[] = [];
  private stopHeartbeat: (() => void) | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private refresher: TokenRefresher | null = null; // the live socket's token refresh, with a token callback

  constructor(
    private readonly opts: ConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.WS = opts.WebSocket ?? defaultWebSocket();
    this.heartbeatMs = opts.heartbeatMs ?? 20_000;
    this.policy = new ReconnectPolicy({ url: opts.url, refreshable: typeof opts.token === 'function', backoff: opts.reconnect });
  }

  get state(): ConnectionState {
    return this.phase === 'idle' ? 'closed' : this.phase;
  }

  /** Closed by close() or given up (not merely never connected: sends then wait for the first connect()). */
  get closed(): boolean {
    return this.phase === 'closed';
  }

  /** The app wants the connection up: work handed out may still be processed (see Inbox). */
  get active(): boolean {
    return this.wanted;
  }

  current(): Link | null {
    const s = this.sock;
    return s?.welcomed ? s.link : null;
  }

  /** See IrisClient.connect. */
  connect(): Promise<Welcome> {
    if (this.phase === 'open' && this.welcome) return Promise.resolve(this.welcome);
    const p = new Promise<Welcome>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.phase === 'connecting' || this.phase === 'reconnecting') return p;
    this.wanted = true;
    this.everOpened = false;
    this.policy.reset();
    this.setPhase('connecting');
    void this.open();
    return p;
  }

  /**
   * Stops for good at the app's request: closes the socket, state 'closed', connect() waiters rejected with
   * `err`. Resolves when the socket closed (at most a second later).
   */
  async close(err: IrisError): Promise<void> {
    this.wanted = false;
    this.clearReconnect();
    const s = this.sock;
    if (s) {
      this.sock = null;
      try {
        s.ws.close(1000, 'client closed');
      } catch {
        // already closed
      }
    }
    this.stopTimers();
    this.setPhase('closed');
    this.rejectConnect(err);
    if (s) await Promise.race([s.closed, new Promise((r) => setTimeout(r, 1000))]);
  }

  // ------------------------------------------------------------------ one attempt

  private async open(): Promise<void> {
    const gen = ++this.gen;
    try {
      await this.hooks.prepare();
    } catch (e) {
      if (gen === this.gen && this.wanted) this.giveUp(new IrisError('connection_refused', `could not load the client store: ${errText(e)}`));
      return;
    }
    let token: string;
    try {
      const t = this.opts.token;
      token = typeof t === 'string' ? t : await t();
    } catch (e) {
      if (gen === this.gen && this.wanted) this.giveUp(new IrisError('auth_failed', `the token callback failed: ${errText(e)}`));
      return;
    }
    if (gen !== this.gen || !this.wanted) return;
    // The callback handed back the token the server just refused: retrying cannot help.
    const stale = this.policy.checkToken(token);
    if (stale) return this.giveUp(stale);
    let ws: WebSocketLike;
    try {
      ws = createSocket(this.WS, this.opts.url, this.opts.tokenTransport ?? 'subprotocol', token);
    } catch (e) {
      this.giveUp(new IrisError('connection_refused', `could not open a WebSocket: ${errText(e)}`));
      return;
    }
    let markClosed: () => void = () => {};
    const now = Date.now();
    const sock: Sock = {
      ws,
      gen,
      token,
      link: { gen, write: (f) => this.write(sock, f) },
      opened: false,
      welcomed: false,
      lastRx: now,
      lastTx: now,
      helloCursor: 0,
      errorText: '',
      refusal: null,
      closed: new Promise<void>((r) => (markClosed = r)),
    };
    this.sock = sock;
    try {
      ws.binaryType = 'arraybuffer';
    } catch {
      // Some implementations only accept their own values; Blobs are handled too.
    }
    ws.addEventListener('open', () => this.onOpen(sock));
    ws.addEventListener('message', (ev) => this.onRaw(sock, ev.data));
    ws.addEventListener('error', (ev) => {
      const t = describeErrorEvent(ev);
      if (t) sock.errorText = t;
    });
    ws.addEventListener('close', (ev) => {
      markClosed();
      if (this.sock !== sock) return;
      this.sock = null;
      this.afterDisconnect(sock, ev.code ?? 1006, ev.reason ?? '');
    });
    this.connectTimer = setTimeout(() => {
      if (this.sock === sock && !sock.welcomed) this.drop(sock, 'no welcome in time', true);
    }, this.opts.connectTimeoutMs ?? 15_000);
  }

  private onOpen(sock: Sock): void {
    if (this.sock !== sock) return;
    sock.opened = true;
    const { cursor, receipts, reads } = this.hooks.hello();
    sock.helloCursor = cursor;
    // `reads` (even 0) tells the server this SDK speaks read receipts. features: this SDK reads message references
    // in deliver entries (PROTOCOL.md 9.9), typing_state (8.8), `sent` entries (9.10), groups (9.11) and
    // the key directory's keys_state (8.9).
    this.write(sock, { t: 'hello', device: this.opts.device, cursor, receipts, reads, features: HELLO_FEATURES.refs | HELLO_FEATURES.typing | HELLO_FEATURES.sync | HELLO_FEATURES.groups | HELLO_FEATURES.keys });
    this.startHeartbeat(sock);
  }

  private onRaw(sock: Sock, data: unknown): void {
    if (this.sock !== sock) return;
    sock.lastRx = Date.now();
    if (typeof data === 'string') return this.onData(sock, data);
    const bin = binaryOf(data);
    if (bin === null) return this.hooks.error(new IrisError('bad_frame', 'unsupported WebSocket message type'));
    if (bin instanceof Promise) {
      // Blobs: keep frame order by decoding through the delivery queue.
      const p = bin;
      this.hooks.inOrder(async () => this.onData(sock, await p));
      return;
    }
    this.onData(sock, bin);
  }

  private onData(sock: Sock, data: string | Uint8Array): void {
    if (this.sock !== sock) return;
    let f;
    try {
      f = decodeFrame(data);
    } catch (e) {
      const msg = e instanceof ProtocolError ? e.message : errText(e);
      return this.hooks.error(new IrisError('bad_frame', `undecodable frame from the server: ${msg}`));
    }
    if (f.t === 'welcome') return this.onWelcome(sock, f);
    if (this.refresher?.onFrame(f as ServerFrame)) return;
    if (f.t === 'error' && !sock.welcomed) {
      // Nothing but the hello has been written: the hello was refused. Fatal ones end the connection attempt
      // now; the rest close and retry.
      sock.refusal = f;
      if (FATAL_HELLO_ERRORS.has(f.code)) this.drop(sock, f.message);
      return;
    }
    this.hooks.frame(f as ServerFrame, sock.gen); // client frames from a server are ignored there
  }

  private onWelcome(sock: Sock, f: WireWelcome): void {
    if (sock.welcomed) return;
    sock.welcomed = true;
    this.clearConnectTimer();
    const welcome: Welcome = { user: f.user, device: f.device, cursor: f.cursor, head: f.head, time: f.time };
    this.hooks.welcomed(sock.gen, welcome, sock.helloCursor);
    this.welcome = welcome;
    this.refresher?.stop();
    const write = (f: ClientFrame): void => void (this.sock === sock && this.write(sock, f));
    this.refresher = TokenRefresher.start(sock.token, this.opts.token, { write, adopted: (t) => void (sock.token = t), error: (e) => this.hooks.error(e) });
    this.everOpened = true;
    this.policy.reset();
    this.setPhase('open');
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.resolve(welcome);
    this.hooks.opened(welcome);
  }

  // ------------------------------------------------------------------ losing a socket

  /** Abandons a socket that went quiet or never welcomed us, without waiting for a close handshake. */
  private drop(sock: Sock, why: string, timedOut = false): void {
    if (this.sock !== sock) return;
    this.sock = null;
    try {
      sock.ws.close(1000, why);
    } catch {
      // already closed
    }
    this.afterDisconnect(sock, 1006, why, timedOut);
  }

  private afterDisconnect(sock: Sock, code: number, reason: string, timedOut = false): void {
    this.stopTimers();
    if (!this.wanted) {
      this.setPhase('closed');
      return;
    }
    const final = closedForToken(code, reason, sock.token, typeof this.opts.token === 'function', this.policy, this.hooks.error);
    if (final) return this.giveUp(final);
    if (code === CLOSE_CODES.replaced) {
      this.giveUp(new IrisError('closed', 'replaced by a newer connection of this device', { closeCode: code }));
      return;
    }
    if (sock.refusal && FATAL_HELLO_ERRORS.has(sock.refusal.code)) {
      this.giveUp(new IrisError(sock.refusal.code, sock.refusal.message, { closeCode: code }));
      return;
    }
    if (!sock.opened && !timedOut) {
      // The handshake failed. A WebSocket API does not say why, so ask the server with a plain GET of the same
      // URL and token: it checks the token before the upgrade headers and answers with the refusal's status.
      const gen = this.gen;
      void probeRefusal(this.opts, sock.token).then((probe) => {
        if (gen === this.gen && this.wanted && this.sock === null) this.afterFailure(sock, code, reason, probe, false);
      });
      return;
    }
    this.afterFailure(sock, code, reason, null, timedOut);
  }

  /** Decides, once the cause of a failed or lost connection is known, whether and when to try again. */
  private afterFailure(sock: Sock, code: number, reason: string, probe: ProbeResult | null, timedOut: boolean): void {
    const { welcomed, token, errorText, refusal } = sock;
    const verdict = this.policy.judge({ welcomed, everOpened: this.everOpened, token, code, reason, errorText, refusal, probe, timedOut });
    if ('giveUp' in verdict) return this.giveUp(verdict.giveUp);
    this.setPhase(this.everOpened ? 'reconnecting' : 'connecting');
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) void this.open();
    }, verdict.retryInMs);
  }

  /** Stops for good: no more reconnects until the app calls connect() again. */
  private giveUp(err: IrisError): void {
    this.wanted = false;
    this.clearReconnect();
    this.stopTimers();
    const s = this.sock;
    this.sock = null;
    if (s) {
      try {
        s.ws.close(1000, 'giving up');
      } catch {
        // already closed
      }
    }
    this.setPhase('closed');
    const hadConnectWaiters = this.connectWaiters.length > 0;
    this.rejectConnect(err);
    if (!hadConnectWaiters) this.hooks.error(err);
    this.hooks.stopped(err);
  }

  private rejectConnect(err: IrisError): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.reject(err);
  }

  private setPhase(p: ConnectionState): void {
    if (this.phase === p) return;
    this.phase = p;
    this.hooks.state(p);
  }

  // ------------------------------------------------------------------ writing, timers

  private write(s: Sock, f: ClientFrame): void {
    this.writeRaw(s, encodeFrame(f, this.opts.encoding ?? 'binary'));
  }

  private writeRaw(s: Sock, data: string | Uint8Array): void {
    try {
      s.ws.send(data);
      s.lastTx = Date.now();
    } catch {
      // The socket is closing; its close event takes over, and unacked work is resent on the next one.
    }
  }

  private startHeartbeat(sock: Sock): void {
    this.clearHeartbeat();
    this.stopHeartbeat = startHeartbeat(this.heartbeatMs, {
      lastRx: () => sock.lastRx,
      lastTx: () => sock.lastTx,
      ping: () => {
        if (this.sock === sock) this.writeRaw(sock, PING_TEXT);
      },
      dead: () => this.drop(sock, 'heartbeat timeout'),
    });
  }

  /** The timers of one socket, and the rest of the client's per-socket work (its pending ack). */
  private stopTimers(): void {
    this.refresher?.stop();
    this.refresher = null;
    this.hooks.down();
    this.clearHeartbeat();
    this.clearConnectTimer();
  }

  private clearHeartbeat(): void {
    this.stopHeartbeat?.();
    this.stopHeartbeat = null;
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  private clearReconnect(): void {
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }
}
