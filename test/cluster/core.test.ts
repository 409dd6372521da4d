import { beforeAll, describe, expect, it } from 'vitest';
import type { ClusterConn } from '../../cluster/nats.js';
import { partitionOf } from '../../cluster/partition.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { DEFAULT_CONFIG } from '../../core/config.js';
import { Mailbox } from '../../core/mailbox.js';
import type { Conn, ConnState } from '../../core/ports.js';
import { decodeFrame, encodeBinary, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import { ClusterFixture } from './fixture.js';

/**
 * The real core (core/Mailbox, its schema: WITHOUT ROWID tables, blobs, many tables per commit) over the cluster
 * Storage, one storage per partition, on a real three-server NATS cluster: a message sent, the owner of both
 * partitions crashes, new owners rebuilt from the log have the inbox, the cursors and the sender's dedup
 * record. This is what cluster mode will put under every shard.
 */

const fx = new ClusterFixture();
let conn: ClusterConn;

beforeAll(async () => {
  conn = await fx.conn('core');
});

class TestConn implements Conn {
  state: ConnState | null = null;
  readonly frames: ServerFrame[] = [];
  readonly queuedBytes = 0;
  private waiters: { test: (f: ServerFrame) => boolean; resolve: (f: ServerFrame) => void }[] = [];
  setState(s: ConnState): void {
    this.state = s;
  }
  send(data: string | Uint8Array): void {
    const f = decodeFrame(data) as ServerFrame;
    this.frames.push(f);
    this.waiters = this.waiters.filter((w) => (w.test(f) ? (w.resolve(f), false) : true));
  }
  close(): void {}
  /** The first frame (already received or still to come) that passes test. */
  next<T extends ServerFrame>(test: (f: ServerFrame) => f is T): Promise<T> {
    const have = this.frames.find(test);
    if (have) return Promise.resolve(have as T);
    return new Promise((resolve) => this.waiters.push({ test, resolve: (f) => resolve(f as T) }));
  }
}

/** One "owner" of every partition the users live in: a storage per partition, a mailbox per user. */
class Owner {
  private readonly storages = new Map<number, ClusterStorage>();
  readonly boxes = new Map<string, Mailbox>();
  readonly sockets = new Map<string, Set<TestConn>>();
  constructor(readonly name: string) {}

  async open(users: string[]): Promise<void> {
    const d = fx.dir();
    for (const u of users) {
      const p = partitionOf(u);
      if (this.storages.has(p)) continue;
      const s = await ClusterStorage.open(conn, p, d, { node: this.name });
      fx.keep(s);
      this.storages.set(p, s);
    }
  }

  mailbox(user: string): Mailbox {
    let m = this.boxes.get(user);
    if (m) return m;
    const storage = this.storages.get(partitionOf(user))!;
    m = new Mailbox({
      user,
      storage,
      config: DEFAULT_CONFIG,
      log: { log: () => undefined },
      clock: { now: () => Date.now() },
      sockets: { list: () => this.sockets.get(user) ?? [] },
      scheduler: { wakeAt: () => undefined },
      peers: {
        forward: (to, batch) => this.mailbox(to).receive(batch),
        presence: async (u, asker) => this.mailbox(u).presence(asker),
      },
    });
    this.boxes.set(user, m);
    return m;
  }

  async frame(user: string, c: TestConn, f: ClientFrame): Promise<void> {
    if (!this.sockets.has(user)) this.sockets.set(user, new Set());
    this.sockets.get(user)!.add(c);
    await this.mailbox(user).onMessage(c, encodeBinary(f));
  }

  crash(): void {
    for (const s of this.storages.values()) s.kill();
  }
}

const isDeliver = (f: ServerFrame): f is Extract<ServerFrame, { t: 'deliver' }> => f.t === 'deliver' && f.entries.some((e) => e.peer === 'alice');
const isSendAck = (f: ServerFrame): f is Extract<ServerFrame, { t: 'send_ack' }> => f.t === 'send_ack';

describe('the core over the cluster Storage', () => {
  it('a message survives the crash of its partitions\' owner: inbox, cursor and dedup come back from the log', async () => {
    const users = ['alice', 'bob'];
    const first = new Owner('first');
    await first.open(users);
    const [a1, b1] = [new TestConn(), new TestConn()];
    await first.frame('alice', a1, { t: 'hello', device: 'a-phone', cursor: 0 });
    await first.frame('bob', b1, { t: 'hello', device: 'b-phone', cursor: 0 });
    const body = new Uint8Array([0, 1, 2, 250, 255]);
    await first.frame('alice', a1, { t: 'send', id: 'c1', to: 'bob', body });
    const ack = await a1.next(isSendAck);
    expect(ack.dup).toBe(false);
    const got = await b1.next(isDeliver);
    const entry = got.entries.find((e) => e.peer === 'alice')!;
    expect([...entry.body]).toEqual([...body]);
    first.crash();

    // New owners rebuilt from snapshot-less logs: every table the core wrote came back through changesets.
    const second = new Owner('second');
    await second.open(users);
    const b2 = new TestConn();
    await second.frame('bob', b2, { t: 'hello', device: 'b-phone', cursor: 0 });
    const again = await b2.next(isDeliver);
    expect(again.entries.find((e) => e.peer === 'alice')!.msg).toBe(entry.msg);
    // The sender's retry of the same client id is a duplicate, with the same server id.
    const a2 = new TestConn();
    await second.frame('alice', a2, { t: 'hello', device: 'a-phone', cursor: 0 });
    await second.frame('alice', a2, { t: 'send', id: 'c1', to: 'bob', body });
    const dup = await a2.next(isSendAck);
    expect(dup.dup).toBe(true);
    expect(dup.msg).toBe(ack.msg);
  });
});
