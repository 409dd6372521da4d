import {
  CLIENT_ID_PATTERN,
  CLOSE_CODES,
  ID_PATTERN,
  LIMITS,
  PING_TEXT,
  ProtocolError,
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
  decodeFrame,
  encodeFrame,
  type ClientFrame,
  type Entry,
  type ErrorFrame,
  type PresenceInfo,
  type SendAck,
  type ServerFrame,
  type Receipts,
  type Welcome,
} from '../protocol/index.js';
import { backoffDelay } from './backoff.js';
import { Emitter, type Listener } from './emitter.js';
import { IrisError } from './errors.js';
import { IdGenerator } from './ids.js';
import {
  type FetchLike,
  type ProbeResult,
  binaryOf,
  defaultWebSocket,
  describeErrorEvent,
  jwtExpired,
  statusFromErrorText,
  type WebSocketConstructor,
  type WebSocketLike,
} from './socket.js';
import { defaultStore } from './default-store.js';
import type { ClientStore, PendingSend, StoredEntry } from './store.js';
import type { ClientEvents, ConnectionState, IrisClientOptions, IrisMessage, IrisReceipt, RecoveredEntry } from './types.js';

const utf8 = new TextEncoder();
const utf8Text = new TextDecoder();

/** Errors answering a hello that no retry will fix. */
const FATAL_HELLO_ERRORS = new Set(['too_many_devices', 'invalid_field', 'bad_state', 'hello_required']);

/**
 * Send refusals that only mean "not now": the client keeps the send and writes it again (same id) after the
 * server's retry-after. rate_limited / outbox_full / unavailable concern every send of this user, so all sends
 * pause; inbox_full concerns one recipient, so only that conversation waits.
 */
const TRANSIENT_SEND_ERRORS = new Set(['rate_limited', 'outbox_full', 'unavailable', 'inbox_full']);
/** Wait before rewriting a transiently refused send whose error frame carried no retry-after. */
const DEFAULT_SEND_RETRY_MS = 1000;
/**
 * Sends written and not yet answered on one connection, at most (retries on). The window halves on a "not now"
 * refusal and grows by one per ack, so a rate-limited client settles near the rate it is allowed instead of
 * rewriting a full window behind every refusal (each rewrite is a frame against the connection's frame rate).
 */
const MAX_SENDS_IN_FLIGHT = 128;
/** Longest gap kept between two sends while pacing to a rate limit (see `paceMs`). */
const MAX_PACE_MS = 1000;
/** Consecutive 401 refusals (each with a fresh token from the token callback) before giving up. */
const MAX_AUTH_REFUSALS = 3;

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: IrisError) => void;
}

/** One unacknowledged send. */
interface Outgoing {
  item: PendingSend;
  waiters: Waiter<SendAck>[];
  /** Persisted in the store: may be written to a socket. */
  ready: boolean;
  /** Generation of the socket it was last written to (0: none). */
  gen: number;
  /** Not to be written before this time (ms since epoch): a transient refusal's retry-after. */
  notBefore: number;
  /** When the first transient refusal of this send came (0: none): bounds the total wait by retry.maxWaitMs. */
  firstRefusal: number;
  /**
   * In flight on the current socket, and an earlier send in its scope was refused after it was written: the
   * server's barrier most likely refuses it too, but it may have been accepted first. Until its own answer
   * comes, nothing later to its recipient is written (that could overtake its resend).
   */
  doubt: boolean;
}

interface Query {
  ref: string;
  users: string[];
  waiter: Waiter<PresenceInfo[]>;
  timer: ReturnType<typeof setTimeout>;
  gen: number;
}

/** One WebSocket attempt and what the client knows about it. */
interface Sock {
  ws: WebSocketLike;
  gen: number;
  token: string;
  opened: boolean;
  welcomed: boolean;
  lastRx: number;
  lastTx: number;
  /** Highest sequence number the server may be acked for on this socket (welcome cursor, then deliveries). */
  maxSeq: number;
  /** Last deliver_ack written on this socket. */
  acked: number;
  /** Cursor the hello carried. */
  helloCursor: number;
  errorText: string;
  /** An error frame that answered the hello. */
  refusal: ErrorFrame | null;
  /** Why the upgrade was refused, learnt by a plain GET after the handshake failed (null: not learnt). */
  probe: Promise<ProbeResult | null> | null;
  closed: Promise<void>;
}

type Phase = ConnectionState | 'idle';

/**
 * The Iris client. One instance is one device of one user: it holds one WebSocket at a time, reconnects with
 * backoff, resumes delivery after its cursor, resends unacknowledged sends with their original ids, and
 * acks deliveries once the app has processed them.
 */
export class IrisClient {
  readonly device: string;
  private readonly opts: IrisClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly store: ClientStore;
  private readonly events = new Emitter<ClientEvents>();
  private readonly ids = new IdGenerator();
  private readonly heartbeatMs: number;
  private readonly ackEvery: number;
  private readonly ackDelayMs: number;
  private readonly maxOutbox: number;
  /** Transient send refusals are retried by the client (false: send() rejects with them). */
  private readonly retrySends: boolean;
  private readonly retryMaxWaitMs: number;
  /** No send is written before this time (rate_limited and the like concern the whole user). */
  private sendsPausedUntil = 0;
  /** Sends that may be in flight at once now (retries on): AIMD between 1 and MAX_SENDS_IN_FLIGHT. */
  private sendWindow = MAX_SENDS_IN_FLIGHT;
  /**
   * After a rate_limited refusal the bucket is empty and refills one token every ~retryAfter ms: sends are then
   * written at most one per paceMs (the largest retryAfter seen since) instead of in bursts that the barrier
   * would mostly refuse. 0: not pacing. Reset when every send is acked (the bucket refills while idle).
   */
  private paceMs = 0;
  private nextSendAt = 0;
  private sendRetryTimer: ReturnType<typeof setTimeout> | null = null;
  private sendRetryAt = 0;
  /** Consecutive 401 refusals, and the token refused last. */
  private authRefusals = 0;
  private refusedToken: string | null = null;
  /** Minimum wait before the next reconnect: the server's Retry-After on a 429/503 refusal. */
  private retryAfterMs = 0;
  /** Highest seq whose listeners finished (or that needed none): deliver_acks never go beyond it. */
  private ackable = 0;
  private detachPageHooks: (() => void) | null = null;

  private phase: Phase = 'idle';
  /** The app wants a connection (connect() called, close() not, not given up). */
  private wanted = false;
  /** A welcome arrived since connect() was called: later failures reconnect instead of rejecting connect(). */
  private everOpened = false;
  private sock: Sock | null = null;
  private gen = 0;
  private attempt = 0;
  private cursorValue = 0;
  /** Receipt version processed (PROTOCOL.md 9.6): the `upTo` of the last receipts frame whose listeners ran. */
  private receiptsValue = 0;
  private loaded: Promise<void> | null = null;
  private welcome: Welcome | null = null;
  private connectWaiters: Waiter<Welcome>[] = [];
  private readonly outbox = new Map<string, Outgoing>();
  private readonly queries = new Map<string, Query>();
  private drainWaiters: (() => void)[] = [];

  private unacked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private connectTimer: ReturnType<typeof setTimeout> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  /** Deliveries are processed one entry at a time, in order, across sockets. */
  private deliveries: Promise<void> = Promise.resolve();
  /** Store calls are serialized; while none is in flight, synchronous stores are called synchronously. */
  private persistTail: Promise<void> = Promise.resolve();
  private persisting = 0;

  constructor(opts: IrisClientOptions) {
    if (!ID_PATTERN.test(opts.device)) {
      throw new IrisError('invalid_field', `device: expected 1-${LIMITS.maxIdLength} chars of [A-Za-z0-9._@+=-]`);
    }
    this.opts = opts;
    this.device = opts.device;
    this.WS = opts.WebSocket ?? defaultWebSocket();
    this.store = opts.store ?? defaultStore(opts.device);
    this.heartbeatMs = opts.heartbeatMs ?? 20_000;
    // The server keeps at most 256 entries unacked per socket (protocol), so an ack batch must stay below it.
    this.ackEvery = Math.max(1, Math.min(opts.ack?.every ?? 32, 128));
    this.ackDelayMs = Math.max(0, opts.ack?.delayMs ?? 50);
    this.maxOutbox = Math.max(1, opts.maxOutbox ?? 1000);
    this.retrySends = opts.retry !== false;
    this.retryMaxWaitMs = Math.max(0, (opts.retry === false ? undefined : opts.retry?.maxWaitMs) ?? 120_000);
  }

  // ------------------------------------------------------------------ public API

  get state(): ConnectionState {
    return this.phase === 'idle' ? 'closed' : this.phase;
  }

  /**
   * Highest sequence number handed out to the app (recorded in the store before any listener saw it): no entry
   * at or below it is ever emitted as `message` / `receipt` again by a client on the same store.
   */
  get cursor(): number {
    return this.cursorValue;
  }

  /** Sends not yet acknowledged by the server. */
  get pending(): number {
    return this.outbox.size;
  }

  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    return this.events.on(event, fn);
  }

  once<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    return this.events.once(event, fn);
  }

  /**
   * Opens the connection. Resolves with the welcome frame. If the very first attempt fails (refused token,
   * server unreachable, no welcome in time) it rejects and the client stays closed — except a 401 with a token
   * callback, which is asked for a new token first. Once connected, drops are repaired by reconnecting with
   * backoff (at least the server's Retry-After), except after close code 4001 (replaced) or auth_failed.
   */
  connect(): Promise<Welcome> {
    if (this.phase === 'open' && this.welcome) return Promise.resolve(this.welcome);
    const p = new Promise<Welcome>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (this.phase === 'connecting' || this.phase === 'reconnecting') return p;
    this.wanted = true;
    this.everOpened = false;
    this.attempt = 0;
    this.authRefusals = 0;
    this.refusedToken = null;
    this.retryAfterMs = 0;
    this.detachPageHooks ??= this.attachPageHooks();
    this.setPhase('connecting');
    void this.open();
    return p;
  }

  /**
   * Closes the connection and stops reconnecting. Processed deliveries are acked first. Pending send() and
   * presence() promises reject with code 'closed'; unacknowledged sends stay in the store and are resent by
   * the next connect() (of this or a later client with the same store).
   */
  async close(): Promise<void> {
    this.wanted = false;
    this.clearTimer('reconnect');
    this.clearTimer('sendRetry');
    this.detachPageHooks?.();
    this.detachPageHooks = null;
    this.flushStore();
    const s = this.sock;
    if (s) {
      if (s.welcomed) this.flushAck();
      this.sock = null;
      try {
        s.ws.close(1000, 'client closed');
      } catch {
        // already closed
      }
    }
    this.stopTimers();
    this.setPhase('closed');
    this.rejectAll(new IrisError('closed', 'client closed'));
    if (s) await Promise.race([s.closed, new Promise((r) => setTimeout(r, 1000))]);
  }

  /**
   * Sends a message. Resolves when the server has durably accepted it (a retry of an accepted id resolves
   * with dup = true and the original server id). Rejects with IrisError for error frames about it.
   * While disconnected the send waits in the outbox and goes out (with the same id) after the next welcome.
   */
  send(to: string, body: Uint8Array | string, opts: { id?: string } = {}): Promise<SendAck> {
    if (!ID_PATTERN.test(to)) return Promise.reject(new IrisError('invalid_field', `to: not a valid user id`));
    const bytes = typeof body === 'string' ? utf8.encode(body) : body.slice();
    if (bytes.byteLength > LIMITS.maxBodyBytes) {
      return Promise.reject(new IrisError('frame_too_large', `body: ${bytes.byteLength} bytes exceeds ${LIMITS.maxBodyBytes}`));
    }
    const id = opts.id ?? this.ids.next('m');
    if (!CLIENT_ID_PATTERN.test(id)) return Promise.reject(new IrisError('invalid_field', 'id: expected 1-64 visible ASCII chars'));
    if (this.phase === 'closed') return Promise.reject(new IrisError('closed', 'client is closed; call connect() first', { ref: id }));
    const existing = this.outbox.get(id);
    if (existing) {
      // The same id while the first is still in flight: one message, one answer for both callers.
      return new Promise((resolve, reject) => existing.waiters.push({ resolve, reject }));
    }
    if (this.outbox.size >= this.maxOutbox) {
      return Promise.reject(new IrisError('outbox_full', `${this.outbox.size} sends are waiting for their acks`, { ref: id }));
    }
    return new Promise<SendAck>((resolve, reject) => {
      const o: Outgoing = { item: { id, to, body: bytes, createdAt: Date.now() }, waiters: [{ resolve, reject }], ready: false, gen: 0, notBefore: 0, firstRefusal: 0, doubt: false };
      this.outbox.set(id, o);
      this.persist(
        () => this.store.putPending(o.item),
        () => {
          o.ready = true;
          this.pumpSends();
        },
        (e) => {
          this.outbox.delete(id);
          this.settleDrain();
          reject(new IrisError('internal', `store: ${errText(e)}`, { ref: id }));
        },
      );
    });
  }

  /** Online state and last-seen time of up to 32 users. */
  presence(users: string[]): Promise<PresenceInfo[]> {
    if (users.length === 0) return Promise.resolve([]);
    if (users.length > LIMITS.maxPresenceUsers) {
      return Promise.reject(new IrisError('invalid_field', `users: at most ${LIMITS.maxPresenceUsers}`));
    }
    for (const u of users) if (!ID_PATTERN.test(u)) return Promise.reject(new IrisError('invalid_field', `users: "${u}" is not a valid user id`));
    if (this.phase === 'closed') return Promise.reject(new IrisError('closed', 'client is closed'));
    const ref = this.ids.next('p');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.queries.delete(ref);
        reject(new IrisError('timeout', 'no presence answer in time', { ref }));
      }, this.opts.requestTimeoutMs ?? 10_000);
      const q: Query = { ref, users: [...users], waiter: { resolve, reject }, timer, gen: 0 };
      this.queries.set(ref, q);
      this.writeQuery(q);
    });
  }

  /** Resolves once every send in the outbox has been acknowledged or refused. */
  drain(): Promise<void> {
    if (this.outbox.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  // ------------------------------------------------------------------ connection lifecycle

  private setPhase(p: ConnectionState): void {
    if (this.phase === p) return;
    this.phase = p;
    this.events.emit('state', p);
  }

  private ensureLoaded(): Promise<void> {
    if (!this.loaded) {
      this.loaded = (async () => {
        const st = await this.store.load();
        this.cursorValue = Math.max(this.cursorValue, st.cursor);
        this.ackable = Math.max(this.ackable, st.cursor);
        this.receiptsValue = Math.max(this.receiptsValue, st.receipts ?? 0);
        // Entries an earlier client handed out whose listeners never finished: 'recovered' before anything new.
        const unfinished = st.unhandled ?? [];
        if (unfinished.length > 0) {
          this.deliveries = this.deliveries
            .then(() => this.recover(unfinished))
            .catch((e: unknown) => this.emitError(new IrisError('internal', `recovery failed: ${errText(e)}`)));
        }
        // Stored sends are older than anything sent from this instance so far: they go first.
        const fresh = [...this.outbox.entries()];
        this.outbox.clear();
        for (const item of st.outbox) {
          if (!fresh.some(([id]) => id === item.id)) this.outbox.set(item.id, { item, waiters: [], ready: true, gen: 0, notBefore: 0, firstRefusal: 0, doubt: false });
        }
        for (const [id, o] of fresh) this.outbox.set(id, o);
      })();
      this.loaded.catch(() => {
        this.loaded = null;
      });
    }
    return this.loaded;
  }

  private async open(): Promise<void> {
    const gen = ++this.gen;
    try {
      await this.ensureLoaded();
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
    if (this.refusedToken !== null && token === this.refusedToken) {
      // The callback handed back the token the server just refused: retrying cannot help.
      this.giveUp(this.authError(this.lastAuthRefusal, 'the token callback returned the token the server refused'));
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = this.createSocket(token);
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
      opened: false,
      welcomed: false,
      lastRx: now,
      lastTx: now,
      maxSeq: 0,
      acked: 0,
      helloCursor: 0,
      errorText: '',
      refusal: null,
      probe: null,
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
      this.onSocketClosed(sock, ev.code ?? 1006, ev.reason ?? '');
    });
    this.connectTimer = setTimeout(() => {
      if (this.sock === sock && !sock.welcomed) this.drop(sock, 'no welcome in time', true);
    }, this.opts.connectTimeoutMs ?? 15_000);
  }

  private createSocket(token: string): WebSocketLike {
    const protocols = [SUBPROTOCOL];
    switch (this.opts.tokenTransport ?? 'subprotocol') {
      case 'subprotocol':
        return new this.WS(this.opts.url, [...protocols, TOKEN_SUBPROTOCOL_PREFIX + token]);
      case 'query': {
        const u = new URL(this.opts.url);
        u.searchParams.set('access_token', token);
        return new this.WS(u.toString(), protocols);
      }
      case 'header':
        return new this.WS(this.opts.url, { protocols, headers: { authorization: `Bearer ${token}` } });
    }
  }

  private onOpen(sock: Sock): void {
    if (this.sock !== sock) return;
    sock.opened = true;
    sock.helloCursor = this.cursorValue;
    this.write(sock, { t: 'hello', device: this.device, cursor: sock.helloCursor, receipts: this.receiptsValue });
    this.startHeartbeat(sock);
  }

  private onSocketClosed(sock: Sock, code: number, reason: string): void {
    if (this.sock !== sock) return;
    this.sock = null;
    this.afterDisconnect(sock, code, reason);
  }

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
      sock.probe = this.probeRefusal(sock);
      void sock.probe.then((probe) => {
        if (gen === this.gen && this.wanted && this.sock === null) this.afterFailure(sock, code, reason, probe, false);
      });
      return;
    }
    this.afterFailure(sock, code, reason, null, timedOut);
  }

  /** Decides, once the cause of a failed or lost connection is known, whether and when to try again. */
  private afterFailure(sock: Sock, code: number, reason: string, probe: ProbeResult | null, timedOut: boolean): void {
    if (!sock.welcomed) {
      const status = probe?.status ?? statusFromErrorText(sock.errorText) ?? (jwtExpired(sock.token, Date.now()) ? 401 : undefined);
      const refusal: ProbeResult = probe ?? { status: status ?? 0 };
      if (status === 401) {
        this.authRefusals++;
        this.refusedToken = sock.token;
        this.lastAuthRefusal = refusal;
        // With a token callback, a 401 means "ask for a new token": the next attempt calls it again.
        if (typeof this.opts.token !== 'function') {
          this.giveUp(this.authError(refusal, 'the token was refused and there is no token callback to get another'));
          return;
        }
        if (this.authRefusals >= MAX_AUTH_REFUSALS) {
          this.giveUp(this.authError(refusal, `${this.authRefusals} tokens in a row were refused`));
          return;
        }
      } else if (status === 403) {
        this.giveUp(this.authError(refusal, 'the token may not connect here'));
        return;
      }
      // Retry-After of a 429 (too many connects) or 503 (shard restarting, server full): wait at least that long.
      this.retryAfterMs = probe?.retryAfter ?? 0;
      if (!this.everOpened && status !== 401) {
        const detail = probe?.message ?? sock.refusal?.message ?? (sock.errorText || reason || `close code ${code}`);
        const details = {
          closeCode: code,
          ...(status && status !== 426 ? { status } : {}),
          ...(probe?.code !== undefined ? { reason: probe.code } : {}),
          ...(probe?.retryAfter !== undefined ? { retryAfter: probe.retryAfter } : {}),
        };
        const err = timedOut
          ? new IrisError('timeout', 'no welcome from the server in time', { closeCode: code })
          : new IrisError('connection_refused', `could not connect to ${this.opts.url}: ${detail}`, details);
        this.giveUp(err);
        return;
      }
    }
    this.setPhase(this.everOpened ? 'reconnecting' : 'connecting');
    const delay = Math.max(backoffDelay(this.attempt++, this.opts.reconnect), this.retryAfterMs);
    this.retryAfterMs = 0;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.wanted) void this.open();
    }, delay);
  }

  private lastAuthRefusal: ProbeResult = { status: 401 };

  /** The terminal error of a refused token: code auth_failed, the server's reason (token_expired, ...). */
  private authError(r: ProbeResult, why: string): IrisError {
    const reason = r.code ?? (r.status === 401 ? 'unauthorized' : r.status === 403 ? 'forbidden' : 'unknown');
    return new IrisError('auth_failed', `server refused the connection (HTTP ${r.status || 401} ${reason}${r.message ? `: ${r.message}` : ''}); ${why}`, {
      status: r.status || 401,
      reason,
    });
  }

  /**
   * GETs the connect URL with the token: the server's refusal (status, JSON {error, message}, Retry-After), or
   * null when that cannot be learnt (no fetch, network failure). Browsers: the token goes as ?access_token=
   * (a simple GET needs no CORS preflight; refusals carry access-control-allow-origin: *), unless the client
   * uses tokenTransport 'header'.
   */
  private async probeRefusal(sock: Sock): Promise<ProbeResult | null> {
    const f = this.opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (this.opts.probeRefusals === false || typeof f !== 'function') return null;
    try {
      const u = new URL(this.opts.url);
      u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
      const headers: Record<string, string> = {};
      if ((this.opts.tokenTransport ?? 'subprotocol') === 'header') headers['authorization'] = `Bearer ${sock.token}`;
      else u.searchParams.set('access_token', sock.token);
      const timeout = typeof AbortSignal.timeout === 'function' ? { signal: AbortSignal.timeout(this.opts.connectTimeoutMs ?? 15_000) } : {};
      const res = await f(u.toString(), { method: 'GET', headers, ...timeout });
      let body: unknown = null;
      try {
        body = await res.json();
      } catch {
        // not JSON: the status alone
      }
      const b = (typeof body === 'object' && body !== null ? body : {}) as { error?: unknown; message?: unknown };
      const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
      return {
        status: res.status,
        ...(typeof b.error === 'string' ? { code: b.error } : {}),
        ...(typeof b.message === 'string' ? { message: b.message } : {}),
        ...(retryAfter !== undefined ? { retryAfter } : {}),
      };
    } catch {
      return null;
    }
  }

  /** Stops for good: no more reconnects until the app calls connect() again. */
  private giveUp(err: IrisError): void {
    this.wanted = false;
    this.detachPageHooks?.();
    this.detachPageHooks = null;
    this.clearTimer('reconnect');
    this.clearTimer('sendRetry');
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
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.reject(err);
    if (!hadConnectWaiters) this.emitError(err);
    // A refused token ends pending sends with that error; other endings with 'closed'.
    const sendErr =
      err.code === 'auth_failed'
        ? err
        : new IrisError('closed', `connection closed: ${err.message}`, err.closeCode !== undefined ? { closeCode: err.closeCode } : {});
    this.rejectAll(sendErr, false);
  }

  /** Rejects every waiting promise; the outbox items themselves stay (and stay in the store). */
  private rejectAll(err: IrisError, includeConnect = true): void {
    if (includeConnect) {
      const ws = this.connectWaiters;
      this.connectWaiters = [];
      for (const w of ws) w.reject(err);
    }
    for (const o of this.outbox.values()) {
      const ws = o.waiters;
      o.waiters = [];
      for (const w of ws) w.reject(err.withRef(o.item.id));
    }
    for (const q of this.queries.values()) {
      clearTimeout(q.timer);
      q.waiter.reject(err.withRef(q.ref));
    }
    this.queries.clear();
  }

  // ------------------------------------------------------------------ timers

  private startHeartbeat(sock: Sock): void {
    this.clearTimer('heartbeat');
    const every = this.heartbeatMs;
    this.heartbeatTimer = setInterval(() => {
      if (this.sock !== sock) return;
      const now = Date.now();
      if (now - sock.lastRx >= 2 * every) {
        this.drop(sock, 'heartbeat timeout');
        return;
      }
      if (now - sock.lastTx >= every) this.writeRaw(sock, PING_TEXT);
    }, Math.max(5, Math.floor(every / 2)));
  }

  private clearTimer(which: 'ack' | 'heartbeat' | 'connect' | 'reconnect' | 'sendRetry'): void {
    switch (which) {
      case 'ack':
        if (this.ackTimer) clearTimeout(this.ackTimer);
        this.ackTimer = null;
        break;
      case 'heartbeat':
        if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
        this.heartbeatTimer = null;
        break;
      case 'connect':
        if (this.connectTimer) clearTimeout(this.connectTimer);
        this.connectTimer = null;
        break;
      case 'reconnect':
        if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
        this.reconnectTimer = null;
        break;
      case 'sendRetry':
        if (this.sendRetryTimer) clearTimeout(this.sendRetryTimer);
        this.sendRetryTimer = null;
        break;
    }
  }

  private stopTimers(): void {
    this.clearTimer('ack');
    this.clearTimer('heartbeat');
    this.clearTimer('connect');
  }

  // ------------------------------------------------------------------ incoming frames

  private onRaw(sock: Sock, data: unknown): void {
    if (this.sock !== sock) return;
    sock.lastRx = Date.now();
    if (typeof data === 'string') return this.onData(sock, data);
    const bin = binaryOf(data);
    if (bin === null) return this.emitError(new IrisError('bad_frame', 'unsupported WebSocket message type'));
    if (bin instanceof Promise) {
      // Blobs: keep frame order by decoding through the delivery queue.
      const p = bin;
      this.deliveries = this.deliveries.then(async () => this.onData(sock, await p)).catch(() => {});
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
      return this.emitError(new IrisError('bad_frame', `undecodable frame from the server: ${msg}`));
    }
    this.onFrame(sock, f as ServerFrame | ClientFrame);
  }

  private onFrame(sock: Sock, f: ServerFrame | ClientFrame): void {
    switch (f.t) {
      case 'welcome':
        return this.onWelcome(sock, f);
      case 'send_ack':
        return this.onSendAck(f);
      case 'deliver':
        return this.onDeliver(sock, f.entries);
      case 'receipts':
        return this.onReceipts(f);
      case 'presence': {
        const q = this.queries.get(f.ref);
        if (!q) return;
        this.queries.delete(f.ref);
        clearTimeout(q.timer);
        q.waiter.resolve(f.users);
        return;
      }
      case 'error':
        return this.onError(sock, f);
      default:
        // pong (liveness is tracked for every frame); client frames from a server are ignored.
        return;
    }
  }

  private onWelcome(sock: Sock, f: Welcome): void {
    if (sock.welcomed) return;
    sock.welcomed = true;
    this.clearTimer('connect');
    sock.maxSeq = f.cursor;
    sock.acked = f.cursor;
    // The server resumes after max(its record, our hello cursor), clamped to its inbox head. It is ahead of us
    // when an earlier install of this device acked further (the local store was lost); it is behind our hello
    // only when its inbox is shorter than our cursor (its data was reset), and then skipping "already seen"
    // seqs would drop new messages. (Entries still being processed from the old socket may have moved our
    // cursor past the hello meanwhile: those come again and are skipped as duplicates.)
    if (f.cursor > this.cursorValue || f.cursor < sock.helloCursor) {
      this.cursorValue = f.cursor;
      this.ackable = f.cursor;
      const c = f.cursor;
      this.persist(() => this.store.saveCursor(c), () => {}, (e) => this.emitError(new IrisError('internal', `store: ${errText(e)}`)));
    }
    this.welcome = f;
    this.everOpened = true;
    this.attempt = 0;
    this.authRefusals = 0;
    this.refusedToken = null;
    this.setPhase('open');
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.resolve(f);
    this.pumpSends();
    for (const q of this.queries.values()) this.writeQuery(q);
    this.events.emit('welcome', f, (e) => this.listenerFailed(e));
  }

  private onSendAck(f: SendAck): void {
    const o = this.outbox.get(f.id);
    if (!o) return; // a duplicate answer (the send was written twice); already settled
    this.outbox.delete(f.id);
    this.persist(() => this.store.deletePending(f.id), () => {}, (e) => this.emitError(new IrisError('internal', `store: ${errText(e)}`)));
    for (const w of o.waiters) w.resolve(f);
    this.events.emit('ack', { ...f, to: o.item.to }, (e) => this.listenerFailed(e));
    this.settleDrain();
    // Accepted in order (a send the server took before refusing an earlier one would have been refused by
    // its barrier): it needs no resend, and the window may grow.
    if (this.sendWindow < MAX_SENDS_IN_FLIGHT) this.sendWindow++;
    this.pumpSends();
  }

  private onError(sock: Sock, f: ErrorFrame): void {
    const details = { ...(f.retryAfter !== undefined ? { retryAfter: f.retryAfter } : {}), ...(f.ref !== undefined ? { ref: f.ref } : {}) };
    const err = new IrisError(f.code, f.message, details);
    if (f.ref !== undefined) {
      const o = this.outbox.get(f.ref);
      if (o && this.retryLater(o, f)) return;
      if (o) {
        // Refused for good (or retries are off, or waited retry.maxWaitMs already).
        this.outbox.delete(f.ref);
        const id = f.ref;
        this.persist(() => this.store.deletePending(id), () => {}, () => {});
        for (const w of o.waiters) w.reject(err);
        if (o.waiters.length === 0) this.emitError(err);
        this.settleDrain();
        this.pumpSends();
        return;
      }
      const q = this.queries.get(f.ref);
      if (q) {
        this.queries.delete(f.ref);
        clearTimeout(q.timer);
        q.waiter.reject(err);
        return;
      }
      // A "not now" for a send already acked: the answer to an extra copy of it (written again after a
      // frame-rate refusal, say). Nothing to do.
      if (TRANSIENT_SEND_ERRORS.has(f.code) && sock.welcomed) return;
    }
    if (f.code === 'rate_limited' && this.retrySends && sock.welcomed) {
      // The connection's frame rate (no ref): the refused frame was not read, and it may have been a send.
      // Everything in flight is written again, in order, after retryAfter (the server dedups what it had).
      this.frameRateRefused(sock, Math.max(1, f.retryAfter ?? DEFAULT_SEND_RETRY_MS));
    }
    if (!sock.welcomed) {
      // The hello was refused. Fatal ones end the connection attempt now; the rest close and retry.
      sock.refusal = f;
      if (FATAL_HELLO_ERRORS.has(f.code)) this.drop(sock, f.message);
      return;
    }
    this.emitError(err);
  }

  // ------------------------------------------------------------------ deliveries and acks

  private onDeliver(sock: Sock, entries: Entry[]): void {
    if (entries.length === 0) return;
    const last = entries[entries.length - 1]!.seq;
    if (last > sock.maxSeq) sock.maxSeq = last;
    this.deliveries = this.deliveries.then(() => this.process(entries)).catch((e: unknown) => {
      this.emitError(new IrisError('internal', `delivery processing failed: ${errText(e)}`));
    });
  }

  /**
   * Receipt states (PROTOCOL.md 9.6), in the same queue as deliveries so listeners see them in arrival order. The
   * version is recorded after the listeners ran: a crash before that replays them (a receipt is idempotent
   * state), it never skips one.
   */
  private onReceipts(f: Receipts): void {
    this.deliveries = this.deliveries
      .then(async () => {
        for (const it of f.items) {
          const errors = await this.events.emitAsync('receipt', { seq: 0, msg: it.msg, by: it.peer, ts: it.ts });
          for (const err of errors) this.listenerFailed(err);
        }
        // The server's version is authoritative (it starts again from 0 when its store was replaced).
        this.receiptsValue = f.upTo;
        const st = this.store;
        if (st.saveReceipts) this.persist(() => st.saveReceipts!(f.upTo), () => {}, (e) => this.emitError(new IrisError('internal', `store: ${errText(e)}`)));
      })
      .catch((e: unknown) => this.emitError(new IrisError('internal', `receipt processing failed: ${errText(e)}`)));
  }

  /**
   * Hands entries to the app in order, each at most once ever: the new ones (seq > cursor) are written to the
   * store as handed out, with the new cursor, in one write BEFORE any listener sees them; then each goes to
   * its listeners, is marked handled when they finished, and becomes ackable.
   */
  private async process(entries: Entry[]): Promise<void> {
    const fresh: Entry[] = [];
    let top = this.cursorValue;
    for (const e of entries) {
      if (e.seq > top) {
        fresh.push(e);
        top = e.seq;
      }
    }
    if (fresh.length > 0) {
      if (!this.wanted) return; // closed: nothing handed out; it all comes again after the cursor next time
      const stored = fresh.map(toStored);
      const p = this.persistPromise(() => this.store.handOut(stored, top));
      if (p) await p;
      this.cursorValue = top;
    }
    let i = 0;
    for (const e of entries) {
      if (i < fresh.length && fresh[i] === e) {
        i++;
        // Once handed out, an entry goes to its listeners even if close() came meanwhile: it will never be
        // emitted as a message again, so this is its one chance outside 'recovered'.
        const errors = e.kind === 'message'
          ? await this.events.emitAsync('message', toMessage(e))
          : await this.events.emitAsync('receipt', toReceipt(e));
        for (const err of errors) this.listenerFailed(err);
        const seq = e.seq;
        this.persist(() => this.store.markHandled([seq]), () => {}, (err) => this.emitError(new IrisError('internal', `store: ${errText(err)}`)));
      }
      // Acked only once its listeners finished: with a store that does not survive the process (MemoryStore),
      // an entry whose handler was cut short by a crash then comes again from the server.
      if (e.seq > this.ackable && e.seq <= this.cursorValue) this.ackable = e.seq;
      this.unacked++;
      this.scheduleAck();
    }
  }

  /** Gives entries handed out by an earlier client whose listeners never finished to 'recovered' listeners. */
  private async recover(entries: StoredEntry[]): Promise<void> {
    for (const e of entries) {
      const r: RecoveredEntry = e.kind === 'message' ? { kind: 'message', message: toMessage(e) } : { kind: 'receipt', receipt: toReceipt(e) };
      const errors = await this.events.emitAsync('recovered', r);
      for (const err of errors) this.listenerFailed(err);
      if (errors.length > 0) continue; // a listener failed: keep it for the next start
      const seq = e.seq;
      this.persist(() => this.store.markHandled([seq]), () => {}, (err) => this.emitError(new IrisError('internal', `store: ${errText(err)}`)));
    }
  }

  private scheduleAck(): void {
    const s = this.sock;
    if (!s?.welcomed) return;
    if (Math.min(this.ackable, s.maxSeq) <= s.acked) return;
    if (this.unacked >= this.ackEvery) {
      this.flushAck();
      return;
    }
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), this.ackDelayMs);
  }

  private flushAck(): void {
    this.clearTimer('ack');
    const s = this.sock;
    if (!s?.welcomed) return;
    // Never ack beyond what this socket delivered (the server refuses that), nor beyond what the app processed.
    const seq = Math.min(this.ackable, s.maxSeq);
    if (seq <= s.acked) return;
    s.acked = seq;
    this.unacked = 0;
    this.write(s, { t: 'deliver_ack', seq });
  }

  // ------------------------------------------------------------------ outgoing frames

  /**
   * Writes every send that may go now, oldest first. With `retry: false` every send is written at once, as soon
   * as it is stored. With retries on (the default) sends are pipelined, up to `sendWindow` in flight, and the
   * order of send() calls to one recipient stays the order in which the server accepts them:
   * - the server keeps a barrier per connection (docs/PROTOCOL.md 9.3): after refusing send X with "not now"
   *   it refuses every later send in X's scope until X comes again;
   * - so after such a refusal this client writes nothing in the scope (every recipient, or X's for inbox_full)
   *   until retryAfter passed, then writes X and what follows it again in their original order;
   * - a send that was in flight behind X (`doubt`) holds back later sends to its recipient until its own
   *   answer comes: a refusal (then it is written again in its place) or an ack (it was accepted in order).
   */
  private pumpSends(): void {
    const s = this.sock;
    if (!s?.welcomed) return;
    if (!this.retrySends) {
      for (const o of this.outbox.values()) if (o.ready && o.gen !== s.gen) this.writeSend(s, o);
      return;
    }
    const now = Date.now();
    let inFlight = 0;
    for (const o of this.outbox.values()) if (o.gen === s.gen) inFlight++;
    const held = new Set<string>();
    let wake = Infinity;
    for (const o of this.outbox.values()) {
      const to = o.item.to;
      if (held.has(to)) continue;
      if (!o.ready) {
        held.add(to); // not stored yet: nothing later to its recipient overtakes it
        continue;
      }
      if (o.gen === s.gen) {
        if (o.doubt) held.add(to);
        continue;
      }
      const at = Math.max(o.notBefore, this.sendsPausedUntil);
      if (at > now) {
        wake = Math.min(wake, at);
        held.add(to);
        continue;
      }
      if (inFlight >= this.sendWindow) break; // the rest follow as answers come, in order
      if (this.paceMs > 0) {
        if (now < this.nextSendAt) {
          wake = Math.min(wake, this.nextSendAt);
          break;
        }
        this.nextSendAt = now + this.paceMs;
      }
      this.writeSend(s, o);
      inFlight++;
    }
    if (wake !== Infinity && (!this.sendRetryTimer || wake < this.sendRetryAt)) {
      this.clearTimer('sendRetry');
      this.sendRetryAt = wake;
      this.sendRetryTimer = setTimeout(() => {
        this.sendRetryTimer = null;
        this.pumpSends();
      }, wake - now);
    }
  }

  private writeSend(s: Sock, o: Outgoing): void {
    o.gen = s.gen;
    o.doubt = false;
    this.write(s, { t: 'send', id: o.item.id, to: o.item.to, body: o.item.body });
  }

  /**
   * A "not now" refusal (rate_limited, inbox_full, outbox_full, unavailable): keeps the send to write it again,
   * with the same id, after the server's retry-after, and marks the sends written after it in its scope as in
   * doubt (see pumpSends). False when retries are off, the code is final, or the send has waited
   * retry.maxWaitMs since its first refusal: then send() rejects with the error.
   */
  private retryLater(o: Outgoing, f: ErrorFrame): boolean {
    if (!this.retrySends || !TRANSIENT_SEND_ERRORS.has(f.code)) return false;
    const now = Date.now();
    if (o.firstRefusal === 0) o.firstRefusal = now;
    const wait = Math.max(1, f.retryAfter ?? DEFAULT_SEND_RETRY_MS);
    if (now + wait - o.firstRefusal > this.retryMaxWaitMs) return false;
    const s = this.sock;
    // The first refusal of a run (not one that only echoes the server's barrier): back off the window.
    if (!o.doubt) {
      this.sendWindow = Math.max(1, Math.floor(this.sendWindow / 2));
      if (f.code === 'rate_limited') this.paceMs = Math.min(MAX_PACE_MS, Math.max(this.paceMs, wait));
    }
    o.gen = 0;
    o.doubt = false;
    const scope = f.code === 'inbox_full' ? o.item.to : null;
    if (scope !== null) o.notBefore = now + wait;
    else this.sendsPausedUntil = Math.max(this.sendsPausedUntil, now + wait);
    if (s) {
      let after = false;
      for (const x of this.outbox.values()) {
        if (x === o) after = true;
        else if (after && x.gen === s.gen && (scope === null || x.item.to === scope)) x.doubt = true;
      }
    }
    this.events.emit('retry', { id: o.item.id, to: o.item.to, code: f.code, retryAfter: wait }, (e) => this.listenerFailed(e));
    this.pumpSends();
    return true;
  }

  /**
   * The server refused a frame for the connection's frame rate, unread: if it was a send, no answer will come
   * for it. Pause all sends for retryAfter, then write everything that was in flight again, in order (answers
   * to the first copies still count; duplicates are acked by the server's dedup).
   */
  private frameRateRefused(s: Sock, wait: number): void {
    const now = Date.now();
    this.sendWindow = 1;
    this.sendsPausedUntil = Math.max(this.sendsPausedUntil, now + wait);
    for (const o of this.outbox.values()) {
      if (o.gen !== s.gen) continue;
      o.gen = 0;
      o.doubt = false;
    }
    this.pumpSends();
  }

  private writeQuery(q: Query): void {
    const s = this.sock;
    if (!s?.welcomed || q.gen === s.gen) return;
    q.gen = s.gen;
    this.write(s, { t: 'presence_query', ref: q.ref, users: q.users });
  }

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

  // ------------------------------------------------------------------ store

  /**
   * Runs a store operation after the ones before it. If nothing is in flight and the store is synchronous,
   * runs it (and `done`) right away, so sends go out in call order without waiting a tick.
   */
  private persist(op: () => void | Promise<void>, done: () => void, fail: (e: unknown) => void): void {
    let p: Promise<void> | null;
    try {
      p = this.persistPromise(op);
    } catch (e) {
      fail(e);
      return;
    }
    if (p === null) done();
    else p.then(done, fail);
  }

  private persistPromise(op: () => void | Promise<void>): Promise<void> | null {
    if (this.persisting === 0) {
      const r = op();
      if (!(r instanceof Promise)) return null;
      return this.track(r);
    }
    return this.track(this.persistTail.then(op));
  }

  private track(p: Promise<void>): Promise<void> {
    this.persisting++;
    const t = p.finally(() => {
      this.persisting--;
    });
    this.persistTail = t.catch(() => {});
    return t;
  }

  // ------------------------------------------------------------------ misc

  /** Writes what the store deferred (handled marks); errors are reported, not thrown. */
  private flushStore(): void {
    const st = this.store;
    if (!st.flush) return;
    this.persist(() => st.flush!(), () => {}, (e) => this.emitError(new IrisError('internal', `store: ${errText(e)}`)));
  }

  /**
   * In a browser, a page can be closed or reloaded at any moment after it is hidden, and timers stop running:
   * send the pending deliver_ack and write deferred store updates as soon as the page is hidden, so a reload
   * does not bring processed entries back from the server (they would be skipped by the cursor, but only a
   * durable store knows the cursor). No-op outside browsers.
   */
  private attachPageHooks(): () => void {
    const g = globalThis as {
      addEventListener?: (type: string, fn: () => void) => void;
      removeEventListener?: (type: string, fn: () => void) => void;
      document?: { visibilityState?: string };
    };
    if (typeof g.addEventListener !== 'function' || typeof g.removeEventListener !== 'function' || g.document === undefined) return () => {};
    const onHide = (): void => {
      if (g.document?.visibilityState === 'visible') return;
      this.flushAck();
      this.flushStore();
    };
    g.addEventListener('pagehide', onHide);
    g.addEventListener('visibilitychange', onHide);
    return () => {
      g.removeEventListener?.('pagehide', onHide);
      g.removeEventListener?.('visibilitychange', onHide);
    };
  }

  private settleDrain(): void {
    if (this.outbox.size > 0) return;
    this.paceMs = 0;
    this.sendWindow = MAX_SENDS_IN_FLIGHT;
    const ws = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of ws) w();
  }

  private emitError(err: IrisError): void {
    this.events.emit('error', err);
  }

  private listenerFailed(e: unknown): void {
    this.emitError(new IrisError('internal', `event listener threw: ${errText(e)}`));
  }
}

function toStored(e: Entry): StoredEntry {
  return { seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body };
}

/** Retry-After in ms: delta-seconds or an HTTP date. */
function parseRetryAfter(v: string | null): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  const n = Number(v);
  if (Number.isFinite(n) && n >= 0) return Math.round(n * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

function toMessage(e: StoredEntry): IrisMessage {
  const body = e.body;
  return { seq: e.seq, msg: e.msg, from: e.peer, ts: e.ts, body, text: () => utf8Text.decode(body) };
}

function toReceipt(e: StoredEntry): IrisReceipt {
  return { seq: e.seq, msg: e.msg, by: e.peer, ts: e.ts };
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
