import { DurableObject } from 'cloudflare:workers';
import { TokenVerifier, authConfigFromEnv, refusal, refusalBody, refusalHeaders, tokenCheck } from '../auth/index.js';
import { configFromEnv, type Config } from '../core/config.js';
import { fetchPushHttp, pushSettingsFromEnv } from '../core/push.js';
import { Mailbox } from '../core/mailbox.js';
import type { GroupNews } from '../core/group/types.js';
import type { GroupPushNote } from '../core/group/push-notes.js';
import { runAdmin, type AdminAnswer, type AdminCall } from '../core/admin.js';
import { Revocations, TOKEN_HEADER, expiryDeadline, parseClaims } from '../core/revocation.js';
import type { ForwardBatch, ForwardResult, LogLevel, Scheduler, TokenClaims } from '../core/ports.js';
import { readNumber, readString } from '../core/settings.js';
import { hasSchema, migrate } from '../core/schema.js';
import { soleUser } from '../core/store.js';
import { CLOSE_CODES, PING_TEXT, PONG_TEXT, SUBPROTOCOL, type GroupEntry, type KeyBundleEntry, type PresenceInfo } from '../protocol/index.js';
import { DoConn, type Attachment } from './conn.js';
import type { Env } from './env.js';
import { TRACE_HEADER, consoleLogger } from './log.js';
import { ShardAnalytics } from './analytics.js';
import { doPeers } from './peers.js';
import { statsSnapshot, type ShardStats } from './stats.js';
import { DEFAULT_DO_LIMITS, doStorage, sqlCounters, type StatementTally } from './storage.js';

/** Header the edge Worker sets to the verified user id. Only the Worker can reach this object. */
export const USER_HEADER = 'X-Iris-User';

/** What workerd puts in place of each invalid UTF-8 sequence of a text message. */
const REPLACEMENT_CHARACTER = '\uFFFD';

/** The liveness sweep never re-arms the alarm sooner than this: a bound on wake-ups, whatever the sockets do. */
const SWEEP_MIN_GAP_MS = 1_000;

/**
 * One user's shard on Cloudflare: a thin adapter from the Durable Object lifecycle to core/Mailbox.
 *
 * Hibernation: sockets are accepted with ctx.acceptWebSocket, so the runtime may evict this object while
 * they stay open; it is rebuilt (constructor again) when a message, close, alarm or RPC arrives. Everything
 * that must survive is in SQLite or in the socket attachments. Heartbeat pings are answered by the runtime
 * (setWebSocketAutoResponse) and never wake the object.
 *
 * Liveness (on-prem has a timer per socket and WebSocket pings; here a timer would keep the object awake):
 * one alarm, shared with the core's forward retries (wakeAt keeps the earliest request), runs sweep(),
 * which closes sockets that sent no hello within IRIS_HELLO_TIMEOUT_MS (4000) and sockets from which
 * nothing — no frame, no auto-answered heartbeat (getWebSocketAutoResponseTimestamp) — arrived for
 * 2 x IRIS_WS_PING_MS (4004 idle_timeout), and re-arms itself for the next such deadline while sockets are open. With
 * the SDK pinging every 20-30 s that is one wake-up per ~30 s per connected user, not one per ping.
 */
export class UserShard extends DurableObject<Env> {
  /** Billing-relevant counters (see stats.ts): a handful of integer adds per event, always on. */
  private readonly counts: Omit<ShardStats, 'databaseBytes' | 'statements'> = {
    instance: crypto.randomUUID(),
    sql: sqlCounters(),
    rpcOut: { forward: 0, presence: 0, watch: 0, push: 0, typing: 0, keys: 0 },
    rpcIn: { receive: 0, presence: 0, watch: 0, push: 0, typing: 0, keys: 0 },
    wsIn: 0,
    wsOut: 0,
    upgrades: 0,
    alarms: 0,
    pushes: { sent: 0, failed: 0, deadLettered: 0 },
    handlerMs: 0,
  };
  /** Rows per statement text: only with IRIS_SQL_TALLY=1 (measurement runs), as it costs a map lookup per statement. */
  private readonly tally: Map<string, StatementTally> | null = this.env['IRIS_SQL_TALLY'] === '1' ? new Map() : null;
  private readonly storage = doStorage(this.ctx.storage, this.counts.sql, this.tally, {
    maxBytes: readNumber(this.env, 'IRIS_DO_MAX_BYTES'),
    fullRetryMs: DEFAULT_DO_LIMITS.fullRetryMs,
  });
  private readonly config: Config;
  private readonly log = consoleLogger((readString(this.env, 'IRIS_LOG') ?? 'info') as LogLevel, () => (this.mailbox ? { user: this.mailbox.user } : {}));
  private readonly conns = new WeakMap<WebSocket, DoConn>();
  /** Counters and histograms to Workers Analytics Engine, one flush a second at most (durable-objects/analytics.ts). */
  readonly analytics = new ShardAnalytics(this.env.METRICS, this.counts, () => this.mailbox?.user, () => this.ctx.getWebSockets().length);
  private mailbox: Mailbox | null = null;
  private alarmAt: number | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.config = configFromEnv(env);
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_TEXT, PONG_TEXT));
    void ctx.blockConcurrencyWhile(async () => {
      this.alarmAt = await this.ctx.storage.getAlarm();
    });
  }

  /** The WebSocket upgrade, forwarded by the edge Worker after it verified the token. */
  override async fetch(request: Request): Promise<Response> {
    return this.timed(() => this.upgrade(request));
  }

  private async upgrade(request: Request): Promise<Response> {
    const user = request.headers.get(USER_HEADER);
    if (!user || request.headers.get('Upgrade')?.toLowerCase() !== 'websocket') {
      // Only the edge reaches this object, and it always sends both: a bug, answered in the one refusal format.
      const r = refusal('bad_request', 'expected a WebSocket upgrade from the edge');
      return new Response(refusalBody(r), { status: r.status, headers: refusalHeaders(r) });
    }
    this.mailboxFor(user);
    // Revocations live here, beside the user's sockets: the edge verified the token, this shard says whether it
    // was revoked, before a socket exists (no extra hop: the upgrade comes here anyway).
    const tok = parseClaims(request.headers.get(TOKEN_HEADER));
    if (new Revocations(this.storage.sql, user).isRevoked(tok)) {
      const r = refusal('token_revoked', 'this token was revoked; get a new one');
      return new Response(refusalBody(r), { status: r.status, headers: refusalHeaders(r) });
    }
    this.counts.upgrades++;
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    const now = Date.now();
    const tr = request.headers.get(TRACE_HEADER);
    const att: Attachment = { user, state: null, opened: now, active: now, tok, ...(tr && { tr }) };
    server.serializeAttachment(att);
    this.wakeAt(now + this.config.helloTimeoutMs);
    // The expiry close is a deadline of the same sweep; arm for it too, in case it comes before the hello timeout.
    const expires = this.config.tokenExpiryClose === 1 ? expiryDeadline(tok, this.config.tokenExpiryGraceS * 1000) : undefined;
    if (expires !== undefined) this.wakeAt(Math.max(expires, now + SWEEP_MIN_GAP_MS));
    return new Response(null, { status: 101, webSocket: client, headers: { 'Sec-WebSocket-Protocol': SUBPROTOCOL } });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.counts.wsIn++;
    return this.timed(() => this.onSocketMessage(ws, message));
  }

  private async onSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const conn = this.conn(ws);
    // Closed by the server (replaced, timed out): what the client still sends is not acted on.
    if (conn.closed) return;
    conn.touch(Date.now());
    if (typeof message === 'string' && message.includes(REPLACEMENT_CHARACTER)) {
      // workerd does not close a text message with invalid UTF-8 (1007, as on-prem's ws does): it decodes it
      // with U+FFFD for each bad sequence and hands us the string, so an invalid sequence and a literal U+FFFD
      // look the same here. No valid client frame needs a literal U+FFFD (every field is ASCII, and unknown
      // fields can say \ufffd), so treat it as invalid UTF-8 — the documented close, not a decoded frame.
      conn.close(CLOSE_CODES.invalid_payload, 'text message is not valid UTF-8');
      await this.release(conn);
      return;
    }
    await this.mailboxFor(conn.user).onMessage(conn, message);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    return this.timed(async () => {
      const conn = this.conn(ws);
      conn.close(code === 1005 || code === 1006 ? 1000 : code, reason);
      await this.release(conn);
    });
  }

  override async webSocketError(ws: WebSocket): Promise<void> {
    return this.timed(() => this.release(this.conn(ws)));
  }

  override async alarm(): Promise<void> {
    this.counts.alarms++;
    return this.timed(() => this.onAlarm());
  }

  private async onAlarm(): Promise<void> {
    this.alarmAt = null;
    await this.sweep(Date.now());
    if (!this.hasSchema()) return;
    const user = this.mailbox?.user ?? soleUser(this.storage.sql);
    if (user !== undefined) await this.mailboxFor(user).onWake();
  }

  /**
   * Closes sockets past their hello or idle deadline and re-arms the alarm for the earliest deadline left.
   * A socket closed here is released at once (presence: offline, last seen now): a dead client never answers
   * the close, so waiting for webSocketClose would leave it "online".
   */
  private async sweep(now: number): Promise<void> {
    const { helloTimeoutMs, pingMs } = this.config;
    let next = Infinity;
    const released: Promise<void>[] = [];
    for (const ws of this.ctx.getWebSockets()) {
      const conn = this.conn(ws);
      if (conn.closed) continue;
      const hello = conn.state === null;
      const due = hello ? conn.opened + helloTimeoutMs : conn.lastHeard(this.ctx.getWebSocketAutoResponseTimestamp(ws)) + 2 * pingMs;
      // The token's expiry is one more deadline of the same alarm: a hibernated shard wakes for it.
      const expires = this.config.tokenExpiryClose === 1 ? expiryDeadline(conn.token, this.config.tokenExpiryGraceS * 1000) : undefined;
      if (expires !== undefined && expires <= now) {
        conn.close(CLOSE_CODES.token_expired, 'token expired and was not refreshed');
        released.push(this.release(conn));
        continue;
      }
      if (due > now) {
        next = Math.min(next, due, expires ?? Infinity);
        continue;
      }
      if (hello) conn.close(CLOSE_CODES.hello_timeout, 'no hello within the hello timeout');
      else conn.close(CLOSE_CODES.idle_timeout, 'nothing received within the idle timeout');
      released.push(this.release(conn));
    }
    await Promise.all(released);
    if (next !== Infinity) this.wakeAt(Math.max(next, now + SWEEP_MIN_GAP_MS));
  }

  /** The socket is gone for the core: runs Mailbox.onClose once, whichever of close, error or sweep comes first. */
  private async release(conn: DoConn): Promise<void> {
    if (conn.released) return;
    conn.markReleased();
    await this.mailboxFor(conn.user).onClose(conn);
  }

  /** The object's single alarm, shared by the core (forward retries) and the liveness sweep: the earliest wins. */
  private wakeAt(ms: number): void {
    if (this.alarmAt !== null && this.alarmAt <= ms) return;
    this.alarmAt = ms;
    void this.ctx.storage.setAlarm(ms);
  }

  /**
   * The admin API (core/admin.ts), called by the edge Worker after it checked the admin credential. Creates the
   * user's storage if there was none: a revocation for a token not used yet must be kept too. Sockets closed
   * here are released at once, like the sweep's (a client that never answers the close is not "online").
   */
  async admin(call: AdminCall): Promise<AdminAnswer> {
    return this.timed(async () => {
      this.mailboxFor(call.user);
      const live = () => this.ctx.getWebSockets().map((ws) => this.conn(ws)).filter((c) => !c.closed);
      const before = live();
      const answer = await runAdmin(call, {
        storage: this.storage,
        conns: live,
        now: () => Date.now(),
        // Erase: each socket is closed and released (Mailbox.onClose writes last seen) before the rows go.
        disconnectAll: async () => {
          for (const c of live()) {
            c.close(CLOSE_CODES.disconnected_by_admin, 'account erased');
            await this.release(c);
          }
        },
        // The mailbox caches what was deleted: the next use builds a new one from storage.
        forget: () => void (this.mailbox = null),
      });
      await Promise.all(before.filter((c) => c.closed).map((c) => this.release(c)));
      return answer;
    });
  }

  /** Whether a token is revoked, for the edge's answer to a plain GET (auth/upgrade.ts identityOf). Creates no storage. */
  async isRevoked(user: string, claims: TokenClaims): Promise<boolean> {
    return this.timed(async () => (!this.mailbox && !this.hasSchema() ? false : new Revocations(this.storage.sql, user).isRevoked(claims)));
  }

  // ---- RPC from other users' shards (DO -> RPC -> DO) ----

  async receive(user: string, batch: ForwardBatch): Promise<ForwardResult> {
    this.counts.rpcIn.receive++;
    return this.timed(() => this.mailboxFor(user).receive(batch));
  }

  async presence(user: string, asker?: string): Promise<PresenceInfo> {
    this.counts.rpcIn.presence++;
    return this.timed(async () => {
      // Asking about a user who never connected must not create storage for them.
      if (!this.mailbox && !this.hasSchema()) return { user, online: false, lastSeen: 0 };
      return this.mailboxFor(user).presence(asker);
    });
  }

  /**
   * Peers.watch (presence subscriptions): the watcher is kept in this object's memory only. Eviction or
   * hibernation forgets it; the watcher's lease renewal (and its re-subscription on reconnect) brings it back.
   */
  async watch(user: string, watcher: string, on: boolean): Promise<PresenceInfo | undefined> {
    this.counts.rpcIn.watch++;
    return this.timed(async () => {
      // Unwatching a user who never connected creates nothing either.
      if (!on && !this.mailbox && !this.hasSchema()) return undefined;
      return this.mailboxFor(user).watchPresence(watcher, on);
    });
  }

  /** Peers.presenceChanged: false (drop me) when no socket of this user subscribed. */
  async presenceChanged(user: string, info: PresenceInfo): Promise<boolean> {
    this.counts.rpcIn.push++;
    return this.timed(async () => {
      if (!this.mailbox && !this.hasSchema()) return false;
      return this.mailboxFor(user).presenceChanged(info);
    });
  }

  /** Peers.groupPush (from a GroupShard): one fan-out round, filtered to this user's ranges. False: no device here. */
  async groupPush(user: string, group: string, after: number, upTo: number, entries: GroupEntry[]): Promise<boolean> {
    return this.timed(async () => {
      // A user who never connected has no device: nothing is created for it.
      if (!this.mailbox && !this.hasSchema()) return false;
      return this.mailboxFor(user).groupPush(group, after, upTo, entries);
    });
  }

  /** Peers.groupNote (core/group/push-notes.ts): group messages for this offline user; a user never seen has no device. */
  async groupNote(user: string, note: GroupPushNote): Promise<void> {
    return this.timed(async () => (!this.mailbox && !this.hasSchema() ? undefined : this.mailboxFor(user).groupNote(note)));
  }

  /** Peers.groupNews: the user's membership of a group changed (stored; its devices catch up). */
  async groupNews(user: string, news: GroupNews): Promise<void> {
    return this.timed(() => this.mailboxFor(user).groupNews(news));
  }

  /**
   * Peers.typing (core/typing.ts): pushed to this user's sockets, never stored. An object with no storage yet (a
   * user who never connected) answers "not online" without creating any; one that is running pushes or, with no
   * socket, remembers the typer in memory to tell it at its next hello.
   */
  async typing(user: string, from: string, conv: string, on: boolean): Promise<boolean> {
    this.counts.rpcIn.typing++;
    return this.timed(async () => {
      if (!this.mailbox && !this.hasSchema()) return false;
      return this.mailboxFor(user).typingFrom(from, conv, on);
    });
  }

  /**
   * Peers.fetchKeys (core/keys.ts): this user's bundle, one prekey per device removed in this object's commit (the
   * output gate holds the answer until it is durable). A user who never connected has no keys: an empty bundle,
   * and no storage created for it.
   */
  async fetchKeys(user: string, requester: string): Promise<KeyBundleEntry[]> {
    this.counts.rpcIn.keys++;
    return this.timed(async () => {
      if (!this.mailbox && !this.hasSchema()) return [];
      return this.mailboxFor(user).keys.take(requester);
    });
  }

  /** Peers.keyDevices: the devices with published keys; creates no storage. */
  async keyDevices(user: string): Promise<string[]> {
    this.counts.rpcIn.keys++;
    return this.timed(async () => {
      if (!this.mailbox && !this.hasSchema()) return [];
      return this.mailboxFor(user).keys.deviceIds();
    });
  }

  /**
   * The counters of stats.ts, for tests and measurement (scripts/bench/cf-rows.ts). Reads nothing from SQL and
   * creates no storage; not counted in rpcIn, so polling it does not disturb what it reports.
   */
  async stats(): Promise<ShardStats> {
    return statsSnapshot<ShardStats>(this.counts, this.ctx.storage.sql.databaseSize, this.tally);
  }

  /** Adds the wall time of one event handler to handlerMs (a lower bound: see ShardStats.handlerMs). */
  private async timed<T>(run: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    try {
      return await run();
    } finally {
      const ms = Date.now() - t0;
      this.counts.handlerMs += ms;
      this.analytics.handler(ms);
    }
  }

  // ---- wiring ----

  private conn(ws: WebSocket): DoConn {
    let c = this.conns.get(ws);
    if (!c) {
      c = new DoConn(ws, this.counts);
      this.conns.set(ws, c);
    }
    return c;
  }

  private hasSchema(): boolean {
    return hasSchema(this.storage.sql);
  }

  private mailboxFor(user: string): Mailbox {
    if (this.mailbox) {
      if (this.mailbox.user !== user) throw new Error(`shard of ${this.mailbox.user} addressed as ${user}`);
      return this.mailbox;
    }
    // Storage is created on first real use, not in the constructor: an object that is only asked for
    // presence stays empty.
    this.ctx.storage.transactionSync(() => migrate(this.storage.sql, Date.now()));
    const env = this.env;
    const peers = doPeers(env, this.counts.rpcOut);
    const scheduler: Scheduler = { wakeAt: (ms) => this.wakeAt(ms) };
    const push = pushSettingsFromEnv(env);
    this.mailbox = new Mailbox({
      user,
      storage: this.storage,
      peers,
      scheduler,
      // A socket the server closed is not online and gets nothing more, even before its close event.
      sockets: { list: () => this.ctx.getWebSockets().map((ws) => this.conn(ws)).filter((c) => !c.closed) },
      clock: { now: () => Date.now() },
      config: this.config,
      log: this.log,
      metrics: {
        ...this.analytics.core(),
        pushSent: () => void this.counts.pushes.sent++,
        pushFailed: () => void this.counts.pushes.failed++,
        pushDeadLettered: () => void this.counts.pushes.deadLettered++,
      },
      // Push webhooks (core/push.ts): fetch() kept alive by waitUntil, retried by this object's one alarm.
      ...(push.url !== undefined && { push: { settings: push, http: fetchPushHttp, background: (p: Promise<unknown>) => this.ctx.waitUntil(p) } }),
      // A `refresh` frame's token is verified by the same code and keys as the edge verifies an upgrade's with.
      tokens: tokenCheck(new TokenVerifier(authConfigFromEnv(env))),
    });
    return this.mailbox;
  }
}
