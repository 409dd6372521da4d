import { DatabaseSync } from 'node:sqlite';
import { DEFAULT_CONFIG, type Config } from '../../core/config.js';
import { Mailbox } from '../../core/mailbox.js';
import { PeerOverloadedError, type Conn, type ConnState, type ForwardBatch, type ForwardResult, type LogFields, type LogLevel, type Metrics, type Sql, type SqlValue, type Storage } from '../../core/ports.js';
import { migrate } from '../../core/schema.js';
import type { PushDeps } from '../../core/push.js';
import type { GroupPushNote } from '../../core/group/push-notes.js';
import { GroupShard } from '../../core/group/group-shard.js';
import { visible, type GroupCall, type GroupNews, type GroupPush, type GroupResult } from '../../core/group/types.js';
import { decodeFrame, encodeBinary, encodeJson, type ClientFrame, type PresenceInfo, type ServerFrame } from '../../protocol/index.js';

/**
 * A whole Iris deployment in one process for unit-testing the core: every user's Mailbox over one in-memory
 * SQLite database, fake sockets, a manual clock, and peers that call each other directly (with failures on
 * demand). With `manualCommit`, writes stay in an open transaction until flush(), so a test can prove that
 * nothing is acked before its commit.
 */

export class FakeConn implements Conn {
  state: ConnState | null = null;
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | null = null;
  /** What the socket still holds for the client; a test sets it to play a client that stopped reading. */
  queuedBytes = 0;
  /** The connection's trace id (Conn.trace), as an adapter sets it at the upgrade. */
  trace: string | undefined = undefined;

  constructor(
    readonly world: World,
    readonly user: string,
  ) {}

  setState(s: ConnState): void {
    this.state = s;
  }
  send(data: string | Uint8Array): void {
    if (this.closed) return;
    this.frames.push(decodeFrame(data) as ServerFrame);
  }
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = { code, reason };
    this.world.sockets(this.user).delete(this);
  }

  /** Sends a client frame in binary (or JSON) and waits for the core to finish with it. */
  async frame(f: ClientFrame, enc: 'binary' | 'json' = 'binary'): Promise<void> {
    await this.world.mailbox(this.user).onMessage(this, enc === 'json' ? encodeJson(f) : encodeBinary(f));
    await this.world.settle();
  }
  async raw(data: string | Uint8Array): Promise<void> {
    await this.world.mailbox(this.user).onMessage(this, data);
    await this.world.settle();
  }
  /** A hello naming HELLO_FEATURES bits (so it carries receipts 0 and reads 0 before them), as the SDK's does. */
  async helloWith(device: string, features: number): Promise<void> {
    await this.frame({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features });
  }
  async hello(device: string, cursor = 0, receipts?: number): Promise<void> {
    await this.frame(receipts === undefined ? { t: 'hello', device, cursor } : { t: 'hello', device, cursor, receipts });
  }
  /** Client-side send (Conn.send is the server-to-client direction). */
  async post(to: string, text: string, id: string): Promise<void> {
    await this.frame({ t: 'send', id, to, body: new TextEncoder().encode(text) });
  }
  async ack(seq: number): Promise<void> {
    await this.frame({ t: 'deliver_ack', seq });
  }
  async disconnect(): Promise<void> {
    this.close(1000, 'bye');
    await this.world.mailbox(this.user).onClose(this);
    await this.world.settle();
  }

  of<T extends ServerFrame['t']>(t: T): Extract<ServerFrame, { t: T }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { t: T }> => f.t === t);
  }
  /** Every delivered entry, in arrival order. */
  entries() {
    return this.of('deliver').flatMap((d) => d.entries);
  }
  /** Every receipt state pushed on this socket, in arrival order (receipts frames, PROTOCOL.md 9.6). */
  receipts() {
    return this.of('receipts').flatMap((r) => r.items);
  }
  /** The receipt version this socket was brought to: what the device sends as hello.receipts. */
  receiptVersion(): number {
    return this.of('receipts').at(-1)?.upTo ?? 0;
  }
  texts(): string[] {
    return this.entries()
      .filter((e) => e.kind === 'message')
      .map((e) => new TextDecoder().decode(e.body));
  }
}

export class World {
  /**
   * Every user shares this World's storage, as the users of one on-prem worker do. With oneHop, Peers.local hands
   * over inside the sender's commit (one hop, one commit); without it every hand-over goes through forward().
   * test/unit/core-one-hop.test.ts runs the core suites again with this set.
   */
  static defaultOneHop = false;
  readonly db = new DatabaseSync(':memory:');
  readonly sql: Sql;
  readonly storage: Storage;
  readonly config: Config;
  now = 1_700_000_000_000;
  /** Users that live in another storage even with oneHop (every hand-over to them is a forward). */
  readonly remote = new Set<string>();
  /** Calls to forward that should fail before one succeeds, per recipient (such a recipient is remote). */
  readonly failForwards = new Map<string, number>();
  /** Recipients whose injected failures say "overloaded" (PeerOverloadedError). */
  readonly overloaded = new Set<string>();
  /** What the mailboxes logged through their Logger port. */
  readonly logs: { level: LogLevel; message: string; error: unknown; fields?: LogFields | undefined }[] = [];
  /** The retry jitter every mailbox draws: 1 (the default) is the top of the range, the plain backoff step. */
  random = 1;
  /** Push webhooks (core/push.ts) every mailbox created after it is set uses. */
  push: PushDeps | undefined;
  /** The core's Metrics port of every mailbox created after it is set. */
  metrics: Metrics | undefined;
  readonly forwardCalls: { to: string; batch: ForwardBatch }[] = [];
  /** Presence subscription calls between shards (Peers.watch / presenceChanged). */
  readonly watchCalls: { subject: string; watcher: string; on: boolean }[] = [];
  readonly pushCalls: { watcher: string; info: PresenceInfo }[] = [];
  /** Typing pushes between shards (Peers.typing), with what each answered (undefined while in flight). */
  readonly typingCalls: { to: string; from: string; conv: string; on: boolean; online?: boolean }[] = [];
  readonly wakes = new Map<string, number>();
  private readonly boxes = new Map<string, Mailbox>();
  private readonly groupShards = new Map<string, GroupShard>();
  /** Group calls (Peers.group / groupPush / groupNews) made, for counting. */
  readonly groupCalls: { group: string; call: GroupCall }[] = [];
  readonly groupPushes: GroupPush[] = [];
  /** Members whose shard fails (rejects) group pushes, as an unreachable shard would. */
  readonly failPushes = new Set<string>();
  /** The Peers calls of groups (core/group), shared by every mailbox and group shard. */
  readonly groupPeers = {
    group: async (group: string, call: GroupCall): Promise<GroupResult> => {
      this.groupCalls.push({ group, call });
      return this.groupShard(group).call(call);
    },
    groupPush: (push: GroupPush): Promise<boolean>[] => {
      this.groupPushes.push(push);
      return push.targets.map(async (t) => {
        if (this.failPushes.has(t.user)) throw new Error(`injected: push to ${t.user} fails`);
        // A member shard not in memory has no device: not woken for it.
        const box = this.boxes.get(t.user);
        return box ? box.groupPush(push.group, push.after, push.upTo, visible(push.entries, t.ranges)) : false;
      });
    },
    groupNews: (user: string, news: GroupNews): Promise<void> => this.mailbox(user).groupNews(news),
    groupNote: async (user: string, note: GroupPushNote): Promise<void> => {
      this.groupNotes.push({ user, note });
      if (this.failNotes.has(user)) throw new Error(`injected: note to ${user} fails`);
      return this.mailbox(user).groupNote(note);
    },
  };
  /** Push notes of groups to offline members (Peers.groupNote, core/group/push-notes.ts). */
  readonly groupNotes: { user: string; note: GroupPushNote }[] = [];
  /** Members whose shard fails (rejects) push notes. */
  readonly failNotes = new Set<string>();
  private readonly socks = new Map<string, Set<FakeConn>>();
  private pendingCommit: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private failFlush: Error | null = null;
  private inTx = false;

  constructor(config: Partial<Config> = {}, readonly manualCommit = false, readonly oneHop = World.defaultOneHop) {
    this.config = { ...DEFAULT_CONFIG, ...config };
    const stmts = new Map<string, ReturnType<DatabaseSync['prepare']>>();
    this.sql = {
      all: <T>(q: string, ...p: SqlValue[]): T[] => {
        let s = stmts.get(q);
        if (!s) {
          s = this.db.prepare(q);
          stmts.set(q, s);
        }
        return s.all(...p) as T[];
      },
    };
    this.storage = {
      sql: this.sql,
      commit: <T>(fn: () => T): Promise<T> => {
        if (!this.inTx) {
          this.db.exec('BEGIN');
          this.inTx = true;
        }
        this.db.exec('SAVEPOINT op');
        let out: T;
        try {
          out = fn();
          this.db.exec('RELEASE op');
        } catch (e) {
          this.db.exec('ROLLBACK TO op');
          this.db.exec('RELEASE op');
          return Promise.reject(e);
        }
        return new Promise<T>((resolve, reject) => {
          this.pendingCommit.push({ resolve: () => resolve(out), reject });
          if (!this.manualCommit) queueMicrotask(() => this.flush());
        });
      },
    };
    this.db.exec('BEGIN');
    migrate(this.sql, this.now);
    this.db.exec('COMMIT');
  }

  /** Commits the open transaction and releases everything waiting on it. */
  flush(): void {
    const failed = this.failFlush;
    this.failFlush = null;
    if (this.inTx) {
      this.db.exec(failed ? 'ROLLBACK' : 'COMMIT');
      this.inTx = false;
    }
    const waiting = this.pendingCommit;
    this.pendingCommit = [];
    for (const w of waiting) {
      if (failed) w.reject(failed);
      else w.resolve();
    }
  }

  /** With manualCommit: commits until p (a core call) has finished, letting everything it waits for run. */
  async drain(p: Promise<void>): Promise<void> {
    let done = false;
    void p.then(() => (done = true));
    while (!done) {
      this.flush();
      await this.settle();
    }
  }

  /** The next COMMIT fails as a whole (as a full disk makes it): rolled back, every waiter rejected with e. */
  failNextFlush(e: Error): void {
    this.failFlush = e;
  }

  sockets(user: string): Set<FakeConn> {
    let s = this.socks.get(user);
    if (!s) {
      s = new Set();
      this.socks.set(user, s);
    }
    return s;
  }

  mailbox(user: string): Mailbox {
    let m = this.boxes.get(user);
    if (!m) {
      m = new Mailbox({
        user,
        storage: this.storage,
        config: this.config,
        log: { log: (level, message, error, fields) => this.logs.push({ level, message, error, fields }) },
        random: () => this.random,
        ...(this.push && { push: this.push }),
        ...(this.metrics && { metrics: this.metrics }),
        clock: { now: () => this.now },
        sockets: { list: () => this.sockets(user) },
        scheduler: { wakeAt: (ms) => this.wakes.set(user, Math.min(ms, this.wakes.get(user) ?? Infinity)) },
        peers: {
          forward: async (to: string, batch: ForwardBatch): Promise<ForwardResult> => {
            this.forwardCalls.push({ to, batch });
            const fails = this.failForwards.get(to) ?? 0;
            if (fails > 0) {
              this.failForwards.set(to, fails - 1);
              if (this.overloaded.has(to)) throw new PeerOverloadedError(`injected: ${to} is overloaded`);
              throw new Error(`injected failure forwarding to ${to}`);
            }
            return this.mailbox(to).receive(batch);
          },
          presence: async (u: string, asker: string) => this.mailbox(u).presence(asker),
          watch: async (subject: string, watcher: string, on: boolean) => {
            this.watchCalls.push({ subject, watcher, on });
            return this.mailbox(subject).watchPresence(watcher, on);
          },
          presenceChanged: async (watcher: string, info: PresenceInfo) => {
            this.pushCalls.push({ watcher, info });
            // A watcher whose shard is not in memory has no socket: not wanted, and not created for it.
            return this.boxes.get(watcher)?.presenceChanged(info) ?? false;
          },
          typing: async (to: string, from: string, conv: string, on: boolean) => this.typingPeer(to, from, conv, on),
          ...this.groupPeers,
          // The key directory (core/keys.ts): straight into the owner's mailbox, as the on-prem router does.
          fetchKeys: async (owner: string, requester: string) => this.mailbox(owner).keys.take(requester),
          keyDevices: async (owner: string) => this.mailbox(owner).keys.deviceIds(),
          local: (to: string) => (this.oneHop && !this.remote.has(to) && !this.failForwards.has(to) ? { handOver: (batch: ForwardBatch) => this.mailbox(to).handOver(batch) } : undefined),
        },
      });
      this.boxes.set(user, m);
    }
    return m;
  }

  /** Peers.typing, from a user's shard or a group's. */
  private typingPeer(to: string, from: string, conv: string, on: boolean): boolean {
    const call: World['typingCalls'][number] = { to, from, conv, on };
    this.typingCalls.push(call);
    // Like the on-prem router: a shard that is not in memory has no socket, and is not created for it.
    call.online = this.boxes.get(to)?.typingFrom(from, conv, on) ?? false;
    return call.online;
  }

  groupShard(group: string): GroupShard {
    let g = this.groupShards.get(group);
    if (!g) {
      g = new GroupShard({
        group,
        storage: this.storage,
        config: this.config,
        log: { log: (level, message, error, fields) => this.logs.push({ level, message, error, fields }) },
        push: this.push?.settings,
        clock: { now: () => this.now },
        scheduler: { wakeAt: (ms) => this.wakes.set(`group:${group}`, Math.min(ms, this.wakes.get(`group:${group}`) ?? Infinity)) },
        peers: { forward: () => Promise.reject(new Error('a group does not forward')), presence: () => Promise.reject(new Error('no presence')), typing: async (to, from, conv, on) => this.typingPeer(to, from, conv, on), ...this.groupPeers },
      });
      this.groupShards.set(group, g);
    }
    return g;
  }

  /** Simulates a restart of a group's shard: its memory (online members, calls in flight) is gone. */
  evictGroup(group: string): void {
    this.groupShards.delete(group);
  }

  /** Simulates a restart of the shard: in-memory state (rate bucket, backoff, full-recipient cache) is gone. */
  evict(user: string): void {
    this.boxes.delete(user);
  }

  connect(user: string): FakeConn {
    const c = new FakeConn(this, user);
    this.sockets(user).add(c);
    return c;
  }

  /** Lets every chained promise (forwards, pumps, receipts) run to completion. */
  async settle(): Promise<void> {
    for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  }

  /** Advances the clock and fires due wakes (the alarm / timer). */
  async advance(ms: number): Promise<void> {
    this.now += ms;
    for (const [user, at] of [...this.wakes]) {
      if (at <= this.now) {
        this.wakes.delete(user);
        if (user.startsWith('group:')) await this.groupShard(user.slice(6)).onWake();
        else await this.mailbox(user).onWake();
      }
    }
    await this.settle();
  }

  count(table: string, user: string): number {
    return (this.db.prepare(`SELECT count(*) AS c FROM ${table} WHERE user = ?`).get(user) as { c: number }).c;
  }
}
