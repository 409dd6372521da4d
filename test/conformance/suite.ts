import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket as WsSocket } from 'ws';
import { IrisClient, IrisError, MemoryStore, type IrisRead, type IrisReadPosition, type PresenceInfo, type SendAck } from '../../client/index.js';
import { FileStore } from '../../client/node-store.js';
import { LIMITS, encodeBinary, type ErrorCode } from '../../protocol/index.js';
import { FEATURES, type ConformanceContext } from './features/index.js';
import { ClientPool, RawSocket, Seen, Sender, sleep, uniqueRun, upgradeRequest, waitFor } from './helpers.js';

/**
 * The black-box conformance suite. It reaches a server only through the SDK, raw WebSockets and raw HTTP
 * upgrade requests, so the same suite runs against every deployment profile (Cloudflare via wrangler dev,
 * on-prem Node): a profile provides a Target and calls runConformance.
 */
export interface Target {
  /** ws://host:port/v1/connect */
  url: string;
  /** A token the server accepts for `user`; expiresIn as jose understands it ('1h', '-1h' = already expired). */
  token(user: string, opts?: { expiresIn?: string; jti?: string; iat?: number }): Promise<string>;
  /** The server's admin API bearer secret (IRIS_ADMIN_SECRET); the suite's own servers always have one. */
  adminToken?: string;
  /** The server's IRIS_TOKEN_EXPIRY_GRACE_S when the suite set it short (its own servers: 1); absent: the default 60. */
  tokenExpiryGraceS?: number;
  /** Stops and starts the server, keeping its data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /**
   * The server's IRIS_PRESENCE_SUBSCRIPTIONS when it is below the protocol's limit (the suite's own servers run
   * with 50); absent: unknown or at the limit, so only the limit itself is checked.
   */
  presenceCap?: number;
  /** The server's IRIS_HISTORY_DEPTH (the suite's own servers run with 20); absent: unknown, taken as the default 0. */
  historyDepth?: number;
}

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');

export function runConformance(name: string, start: () => Promise<Target>): void {
  describe(`conformance: ${name}`, () => {
    let target: Target;
    const run = uniqueRun();
    let n = 0;
    /** A user id no other test (or earlier run against the same server) uses. */
    const user = (label: string) => `${label}-${run}-${++n}`;
    const pool = new ClientPool(
      () => target.url,
      (u) => target.token(u),
    );
    const dirs: string[] = [];

    beforeAll(async () => {
      target = await start();
    }, 120_000);

    afterEach(async () => {
      await pool.closeAll();
    });

    afterAll(async () => {
      await pool.closeAll();
      await target?.stop();
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    }, 60_000);

    async function online(label: string, extra: Parameters<ClientPool['make']>[1] = {}) {
      const u = user(label);
      const c = pool.make(u, extra);
      const seen = new Seen(c);
      const s = new Sender(c);
      const welcome = await c.connect();
      return { u, c, s, seen, welcome };
    }

    const ctx: ConformanceContext = {
      target: () => target,
      user,
      pool,
      online,
      tempDir: () => {
        const d = mkdtempSync(join(tmpdir(), 'iris-conf-'));
        dirs.push(d);
        return d;
      },
    };
    for (const feature of FEATURES) feature(ctx);

    // ------------------------------------------------------------------ messaging

    it('two users exchange messages both ways, with acks and delivery receipts (binary and JSON peers)', async () => {
      // Also covers the token transports: query string (a), Authorization header (b), subprotocol (everyone else).
      const a = await online('a', { encoding: 'json', tokenTransport: 'query' });
      const b = await online('b', { tokenTransport: 'header' });
      expect(a.welcome.user).toBe(a.u);
      expect(a.welcome.device).toBe('d1');

      const before = Date.now() - 5_000;
      const ackA = await a.c.send(b.u, 'hello b');
      expect(ackA.dup).toBe(false);
      expect(ackA.ts).toBeGreaterThan(before);
      await waitFor(() => b.seen.messages.length === 1, 10_000, 'b to receive');
      const m = b.seen.messages[0]!;
      expect([m.from, m.text(), m.msg, m.ts]).toEqual([a.u, 'hello b', ackA.msg, ackA.ts]);

      const ackB = await b.c.send(a.u, new Uint8Array([0, 1, 2, 250]));
      await waitFor(() => a.seen.messages.length === 1, 10_000, 'a to receive');
      expect([...a.seen.messages[0]!.body]).toEqual([0, 1, 2, 250]);
      expect(a.seen.messages[0]!.msg).toBe(ackB.msg);
      expect(ackB.msg).not.toBe(ackA.msg);

      // Each side's ack of the other's message becomes a receipt for the sender.
      await waitFor(() => a.seen.receipts.length === 1 && b.seen.receipts.length === 1, 10_000, 'receipts');
      expect([a.seen.receipts[0]!.msg, a.seen.receipts[0]!.by]).toEqual([ackA.msg, b.u]);
      expect([b.seen.receipts[0]!.msg, b.seen.receipts[0]!.by]).toEqual([ackB.msg, a.u]);
      expect(a.seen.errors).toEqual([]);
      expect(b.seen.errors).toEqual([]);
    });

    it('an offline recipient gets its messages, in order, when it connects; the sender then gets receipts', async () => {
      const a = await online('a');
      const bu = user('b');
      const acks: SendAck[] = [];
      for (const t of ['one', 'two', 'three']) acks.push(await a.s.send(bu, t));

      const b = pool.make(bu);
      const seen = new Seen(b);
      const w = await b.connect();
      expect(w.head).toBeGreaterThanOrEqual(3);
      await waitFor(() => seen.messages.length === 3, 10_000, 'offline messages');
      expect(seen.texts()).toEqual(['one', 'two', 'three']);
      expect(seen.messages.map((m) => m.msg)).toEqual(acks.map((x) => x.msg));
      // Receipts are cumulative (PROTOCOL.md 9.6): the last one names the newest message, and each names one of
      // ours, in send order, from the recipient.
      const last = acks[acks.length - 1]!.msg;
      await waitFor(() => a.seen.receipts.some((r) => r.msg === last), 10_000, 'a receipt covering the last message');
      const order = acks.map((x) => x.msg);
      const named = a.seen.receipts.map((r) => order.indexOf(r.msg));
      expect(named.every((i) => i >= 0)).toBe(true);
      expect(named).toEqual([...named].sort((x, y) => x - y));
      expect(a.seen.receipts.every((r) => r.by === bu)).toBe(true);
    });

    it('resumes after an abrupt kill mid-stream: a new process with the same device and store misses nothing and repeats nothing', async () => {
      const N = 300;
      const K = 100;
      const a = await online('a');
      const bu = user('b');
      const sends: Promise<SendAck>[] = [];
      for (let i = 0; i < N; i++) sends.push(a.s.send(bu, `m${i}`));
      await Promise.all(sends);

      const dir = mkdtempSync(join(tmpdir(), 'iris-resume-'));
      dirs.push(dir);
      const storePath = join(dir, 'b.json');
      // First process: processes K messages (never acking: its ack batch is larger and its delay longer),
      // then hangs inside the handler of message K+1 and is killed with SIGKILL.
      const child = spawn(process.execPath, ['--import', 'tsx', join(HERE, 'resume-child.ts')], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, IRIS_URL: target.url, IRIS_TOKEN: await target.token(bu), IRIS_STORE: storePath, IRIS_DEVICE: 'd1', IRIS_STOP_AFTER: String(K) },
      });
      let stderr = '';
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      const first: string[] = [];
      let stuck = false;
      createInterface({ input: child.stdout }).on('line', (l) => {
        if (l === 'STUCK') stuck = true;
        else if (l.startsWith('MSG ')) first.push(l.slice(4));
      });
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      try {
        await waitFor(() => stuck || child.exitCode !== null, 30_000, 'the first process to get stuck');
      } finally {
        child.kill('SIGKILL');
        await exited;
      }
      expect(stuck, stderr).toBe(true);
      // The order the server accepted A's sends in (= send order unless it throttled A and sends were retried).
      const order = a.s.accepted;
      expect(order).toHaveLength(N);
      expect(first).toEqual(order.slice(0, K));

      // Second process: same device, same store file. The first one had recorded message K+1 (and the rest of
      // its deliver frame) as handed out before its handler hung: those come to 'recovered', never as messages.
      const b2 = pool.make(bu, { store: new FileStore(storePath) });
      const seen = new Seen(b2);
      const w = await b2.connect();
      expect(w.cursor).toBeGreaterThan(K);
      const handedOut = w.cursor;
      await waitFor(() => seen.messages.length >= N - handedOut, 30_000, 'the rest of the stream');
      await sleep(300); // anything extra would show up now
      // Recovered: every entry handed out whose handler did not finish (K+1 .. handedOut), and possibly some
      // before it that did finish but whose handled mark (deferred by the FileStore) was not written yet.
      const rec = seen.recovered.map((m) => m.text());
      expect(rec.length).toBeGreaterThanOrEqual(handedOut - K);
      expect(rec).toEqual(order.slice(handedOut - rec.length, handedOut));
      expect(seen.texts()).toEqual(order.slice(handedOut));
      expect(new Set([...first, ...seen.texts()]).size).toBe(first.length + seen.messages.length);
    });

    it('a second connection of the same device replaces the first (close 4001, no reconnect) and takes over the stream', async () => {
      const a = await online('a');
      const bu = user('b');
      const store = new MemoryStore();
      const b1 = pool.make(bu, { store });
      const seen1 = new Seen(b1);
      await b1.connect();
      await a.s.send(bu, 'first');
      await waitFor(() => seen1.messages.length === 1, 10_000, 'b1 to receive');

      const b2 = pool.make(bu, { store });
      const seen2 = new Seen(b2);
      await b2.connect();
      await waitFor(() => b1.state === 'closed', 10_000, 'b1 to be replaced');
      expect(seen1.errors.map((e) => [e.code, e.closeCode])).toEqual([['closed', 4001]]);
      await a.s.send(bu, 'second');
      await waitFor(() => seen2.messages.length === 1, 10_000, 'b2 to receive');
      await sleep(300);
      expect(seen2.texts()).toEqual(['second']);
      expect(seen1.texts()).toEqual(['first']);
      expect(b1.state).toBe('closed');
    });

    it('the same client message id sent twice is stored once: the second ack says dup with the same server id', async () => {
      const a = await online('a');
      const b = await online('b');
      const id = `dup-${run}`;
      const first = await a.s.send(b.u, 'once', id);
      const second = await a.s.send(b.u, 'once', id);
      expect(first.dup).toBe(false);
      expect(second.dup).toBe(true);
      expect(second.msg).toBe(first.msg);
      expect(second.ts).toBe(first.ts);
      const after = await a.s.send(b.u, 'sentinel');
      await waitFor(() => b.seen.messages.some((m) => m.msg === after.msg), 10_000, 'the sentinel');
      expect(b.seen.texts()).toEqual(['once', 'sentinel']);
    });

    it('1,000 messages from A to B arrive in order, exactly once', async () => {
      const N = 1000;
      const a = await online('a', { maxOutbox: N });
      const b = await online('b');
      const sends: Promise<SendAck>[] = [];
      for (let i = 0; i < N; i++) sends.push(a.s.send(b.u, `n${i}`));
      const acks = await Promise.all(sends);
      expect(new Set(acks.map((x) => x.msg)).size).toBe(N);
      await waitFor(() => b.seen.messages.length >= N, 60_000, `${N} messages`);
      await sleep(300);
      expect(b.seen.messages).toHaveLength(N);
      const sent = Array.from({ length: N }, (_, i) => `n${i}`);
      // Received in the order the server accepted them, each exactly once...
      expect(b.seen.texts()).toEqual(a.s.accepted);
      expect([...b.seen.texts()].sort()).toEqual([...sent].sort());
      // ...which is the send order, unless the server throttled A and retries reshuffled it.
      if (a.s.retries === 0) expect(b.seen.texts()).toEqual(sent);
      expect(new Set(b.seen.messages.map((m) => m.msg))).toEqual(new Set(acks.map((x) => x.msg)));
      const seqs = b.seen.messages.map((m) => m.seq);
      for (let i = 1; i < N; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
    }, 90_000);

    it('keeps per-conversation FIFO with two senders interleaved', async () => {
      const N = 200;
      const a = await online('a');
      const c = await online('c');
      const b = await online('b');
      const sends: Promise<SendAck>[] = [];
      for (let i = 0; i < N; i++) {
        sends.push(a.s.send(b.u, `a${i}`));
        sends.push(c.s.send(b.u, `c${i}`));
      }
      await Promise.all(sends);
      await waitFor(() => b.seen.messages.length >= 2 * N, 30_000, 'all messages');
      await sleep(200);
      expect(b.seen.messages).toHaveLength(2 * N);
      expect(b.seen.texts(a.u)).toEqual(a.s.accepted);
      expect(b.seen.texts(c.u)).toEqual(c.s.accepted);
      expect(new Set(b.seen.texts(a.u)).size).toBe(N);
      expect(new Set(b.seen.texts(c.u)).size).toBe(N);
      if (a.s.retries + c.s.retries === 0) {
        expect(b.seen.texts(a.u)).toEqual(Array.from({ length: N }, (_, i) => `a${i}`));
        expect(b.seen.texts(c.u)).toEqual(Array.from({ length: N }, (_, i) => `c${i}`));
      }
    });

    it('a server restart keeps offline messages, and connected clients reconnect by themselves', async () => {
      const a = await online('a');
      const bu = user('b');
      for (const t of ['before-1', 'before-2', 'before-3']) await a.s.send(bu, t);

      await target.restart();

      await waitFor(() => a.seen.states.includes('reconnecting') && a.c.state === 'open', 30_000, 'a to reconnect');
      const ack = await a.s.send(bu, 'after');
      expect(ack.dup).toBe(false);
      const b = pool.make(bu);
      const seen = new Seen(b);
      await b.connect();
      await waitFor(() => seen.messages.length === 4, 15_000, 'messages stored before the restart');
      expect(seen.texts()).toEqual(['before-1', 'before-2', 'before-3', 'after']);
    }, 90_000);

    // ------------------------------------------------------------------ presence

    it('reports presence: online while connected, offline with lastSeen after disconnect, never-seen as 0', async () => {
      const a = await online('a');
      const t0 = Date.now();
      const b = await online('b');
      const ghost = user('ghost');
      const [pb, pg] = await a.c.presence([b.u, ghost]);
      expect(pb).toMatchObject({ user: b.u, online: true });
      expect(pg).toEqual({ user: ghost, online: false, lastSeen: 0 });

      const closing = Date.now();
      await b.c.close();
      let after = pb!;
      for (let i = 0; i < 100 && after.online; i++) {
        await sleep(100);
        after = (await a.c.presence([b.u]))[0]!;
      }
      expect(after.online).toBe(false);
      expect(after.lastSeen).toBeGreaterThanOrEqual(t0 - 2_000);
      expect(after.lastSeen).toBeGreaterThanOrEqual(closing - 2_000);
      expect(after.lastSeen).toBeLessThanOrEqual(Date.now() + 2_000);
    });

    // ------------------------------------------------------------------ presence subscriptions (PROTOCOL.md 8.6)
    // The suite's own targets run with IRIS_PRESENCE_HOLD_MS=1500 and IRIS_PRESENCE_SUBSCRIPTIONS=50 (an external
    // server may keep its defaults). Nothing here asserts on
    // durations: every check waits for an event, and "nothing arrived" is checked against a later sentinel event.

    /** A connected user that records every presence event it gets. */
    async function watcher(label: string) {
      const w = await online(label);
      const events: PresenceInfo[] = [];
      const errors: IrisError[] = [];
      w.c.on('presence', (p) => void events.push(p));
      w.c.on('error', (e) => void errors.push(e));
      return { ...w, events, errors, of: (u: string) => events.filter((e) => e.user === u) };
    }

    it('presence_subscribe: current state at once, then online and (after the hold) offline with last seen', async () => {
      const a = await watcher('a');
      const b = await online('b');
      const ghost = user('ghost');
      a.c.subscribePresence([b.u, ghost]);
      await waitFor(() => a.of(b.u).length === 1 && a.of(ghost).length === 1, 10_000, 'the current state');
      expect(a.of(b.u)[0]).toMatchObject({ user: b.u, online: true });
      expect(a.of(ghost)[0]).toEqual({ user: ghost, online: false, lastSeen: 0 });
      await b.c.close();
      await waitFor(() => a.of(b.u).length === 2, 15_000, 'the offline push');
      const off = a.of(b.u)[1]!;
      expect(off.online).toBe(false);
      expect(off.lastSeen).toBeGreaterThan(0);
      const b2 = pool.make(b.u, { device: 'd2' });
      await b2.connect();
      await waitFor(() => a.of(b.u).length === 3, 10_000, 'the online push');
      expect(a.of(b.u)[2]).toMatchObject({ online: true });
    }, 60_000);

    it('presence: a flap within the hold pushes nothing', async () => {
      const a = await watcher('a');
      const b = await online('b');
      const c = await online('c');
      a.c.subscribePresence([b.u, c.u]);
      await waitFor(() => a.of(b.u).length === 1 && a.of(c.u).length === 1, 10_000, 'the current state');
      // b's only device drops and comes back at once (well inside the 1.5 s hold on loopback).
      await b.c.close();
      const b2 = pool.make(b.u, { device: 'd2' });
      await b2.connect();
      // Sentinel: c goes offline after the flap; its push arrives a hold later. b's flap must not show before it.
      await c.c.close();
      await waitFor(() => a.of(c.u).length === 2, 15_000, "c's offline push");
      expect(a.of(b.u)).toHaveLength(1);
    }, 60_000);

    it('presence visibility nobody and contacts really hide: no record, no push, presence_query reads never seen', async () => {
      const a = await watcher('a');
      const hidden = await online('hidden');
      const friendOnly = await online('friend');
      const sentinel = await online('sentinel');
      hidden.c.setPresenceVisibility('nobody');
      friendOnly.c.setPresenceVisibility('contacts');
      // A frame written after set_presence on the same connections: the settings are stored by then.
      await hidden.c.presence([hidden.u]);
      await friendOnly.c.presence([friendOnly.u]);
      a.c.subscribePresence([hidden.u, friendOnly.u, sentinel.u]);
      await waitFor(() => a.of(sentinel.u).length === 1, 10_000, "the sentinel's state");
      expect(a.of(hidden.u)).toEqual([]);
      expect(a.of(friendOnly.u)).toEqual([]);
      await hidden.c.close();
      await friendOnly.c.close();
      await sentinel.c.close();
      await waitFor(() => a.of(sentinel.u).length === 2, 15_000, "the sentinel's offline push");
      expect(a.of(hidden.u)).toEqual([]);
      expect(a.of(friendOnly.u)).toEqual([]);
      const [ph, pf] = await a.c.presence([hidden.u, friendOnly.u]);
      expect(ph).toEqual({ user: hidden.u, online: false, lastSeen: 0 });
      expect(pf).toEqual({ user: friendOnly.u, online: false, lastSeen: 0 });
    }, 60_000);

    it('presence visibility contacts shows the subject to a user it exchanged messages with', async () => {
      const a = await watcher('a');
      const b = await online('b');
      b.c.setPresenceVisibility('contacts');
      // b's message reached a: from then on b's store knows a as a contact (receipts_in). The receipt is the
      // event that says so; subscribing before it would race it.
      const delivered = new Promise<void>((res) => b.c.on('receipt', () => res()));
      await b.c.send(a.u, 'hi');
      await delivered;
      a.c.subscribePresence([b.u]);
      await waitFor(() => a.of(b.u).length === 1, 10_000, "b's state");
      expect(a.of(b.u)[0]).toMatchObject({ online: true });
    }, 30_000);

    it('presence_subscribe over the server cap is refused with invalid_field', async () => {
      const a = await watcher('a');
      const cap = target.presenceCap;
      if (cap === undefined) {
        // A server at the protocol's limit: a longer list cannot even be sent (the codec and the server refuse it
        // too: test/unit/protocol-malformed.test.ts).
        const tooMany = Array.from({ length: LIMITS.maxPresenceSubscriptions + 1 }, (_, i) => user(`s${i}`));
        expect(() => a.c.subscribePresence(tooMany)).toThrow(expect.objectContaining({ code: 'invalid_field' }));
        return;
      }
      a.c.subscribePresence(Array.from({ length: cap + 1 }, (_, i) => user(`s${i}`)));
      await waitFor(() => a.errors.length > 0, 10_000, 'the refusal');
      expect(a.errors[0]!.code).toBe('invalid_field');
      expect(a.events).toEqual([]);
    }, 30_000);

    it('presence subscriptions come back after a reconnect (the SDK subscribes again)', async () => {
      const a = await watcher('a');
      const b = await online('b');
      a.c.subscribePresence([b.u]);
      await waitFor(() => a.of(b.u).length === 1, 10_000, "b's state");
      await target.restart();
      await waitFor(() => a.seen.states.includes('reconnecting') && a.c.state === 'open', 30_000, 'a to reconnect');
      await waitFor(() => b.c.state === 'open', 30_000, 'b to reconnect');
      // Re-subscribed: the answer repeats b's state; then a change of b's reaches a.
      await waitFor(() => a.of(b.u).some((e, i) => i > 0 && e.online), 15_000, "b's state after the reconnect");
      const n = a.of(b.u).length;
      await b.c.close();
      await waitFor(() => a.of(b.u).length > n && !a.of(b.u).at(-1)!.online, 15_000, "b's offline push after the reconnect");
    }, 90_000);

    // ------------------------------------------------------------------ read receipts (PROTOCOL.md 9.8)

    /** A client of `u` on device `device`, with what it saw of read receipts. */
    async function reader(u: string, device: string, store = new MemoryStore()) {
      const c = pool.make(u, { device, store });
      const seen = new Seen(c);
      const reads: IrisRead[] = [];
      const positions: IrisReadPosition[] = [];
      const settings: boolean[] = [];
      c.on('read', (r) => void reads.push(r));
      c.on('readState', (p) => void positions.push(p));
      c.on('settings', (x) => void settings.push(x.readReceipts));
      await c.connect();
      return { c, seen, reads, positions, settings, store };
    }

    it("read receipts: one mark reaches the sender's devices coalesced and the reader's other devices; a reconnect resumes with only changes", async () => {
      const au = user('a');
      const bu = user('b');
      const a1 = await reader(au, 'd1');
      const a2 = await reader(au, 'd2');
      const b1 = await reader(bu, 'd1');
      const b2store = new MemoryStore();
      const b2 = await reader(bu, 'd2', b2store);
      const acks: SendAck[] = [];
      for (const t of ['one', 'two', 'three']) acks.push(await new Sender(a1.c).send(bu, t));
      await waitFor(() => b1.seen.messages.length === 3, 10_000, 'b1 to receive');
      const last = acks[2]!.msg;
      // One mark for the whole burst.
      b1.c.markRead(au, last);
      await waitFor(() => a1.reads.length > 0 && a2.reads.length > 0, 10_000, "the sender's devices to learn it");
      for (const x of [a1, a2]) expect(x.reads.map((r) => [r.by, r.msg])).toEqual([[bu, last]]);
      // Read implies delivered: the sender's delivery state reaches the same message.
      await waitFor(() => a1.seen.receipts.some((r) => r.msg === last), 10_000, 'a delivery receipt as far');
      await waitFor(() => b1.positions.length > 0 && b2.positions.length > 0, 10_000, "the reader's devices to sync");
      for (const x of [b1, b2]) expect(x.positions.map((p) => [p.conv, p.msg])).toEqual([[au, last]]);

      // b2 goes away; b1 reads one more; b2 comes back on its store and gets only that change.
      await b2.c.close();
      const ack4 = await new Sender(a1.c).send(bu, 'four');
      await waitFor(() => b1.seen.messages.length === 4, 10_000, 'b1 to receive four');
      b1.c.markRead(au, ack4.msg);
      await waitFor(() => b1.positions.length === 2, 10_000, 'b1 to see its mark');
      const back = await reader(bu, 'd2', b2store);
      await waitFor(() => back.positions.length > 0, 10_000, 'the returning device to catch up');
      await waitFor(() => a1.reads.some((r) => r.msg === ack4.msg), 10_000, 'the sender to learn the second mark');
      // A later mark (only to have an event to wait for) proves nothing older came again before it.
      const ack5 = await new Sender(a1.c).send(bu, 'five');
      await waitFor(() => b1.seen.messages.length === 5, 10_000, 'b1 to receive five');
      b1.c.markRead(au, ack5.msg);
      await waitFor(() => back.positions.some((p) => p.msg === ack5.msg), 10_000, 'the returning device to get the new mark');
      expect(back.positions.map((p) => p.msg)).toEqual([ack4.msg, ack5.msg]);
      for (const x of [a1, a2, b1, b2, back]) expect(x.seen.errors).toEqual([]);
    });

    it('read receipts off: senders get no read positions, delivery receipts and the own devices still work', async () => {
      const au = user('a');
      const bu = user('b');
      const a = await reader(au, 'd1');
      const b1 = await reader(bu, 'd1');
      const b2 = await reader(bu, 'd2');
      await waitFor(() => b1.settings.length > 0, 10_000, 'the settings after welcome');
      expect(b1.settings).toEqual([true]);
      b1.c.setReadReceipts(false);
      await waitFor(() => b1.settings.length === 2 && b2.settings.length === 2, 10_000, 'both devices to learn the setting');
      expect([b1.c.readReceipts, b2.c.readReceipts]).toEqual([false, false]);
      const first = await new Sender(a.c).send(bu, 'private');
      await waitFor(() => b1.seen.messages.length === 1, 10_000, 'b1 to receive');
      b1.c.markRead(au, first.msg);
      await waitFor(() => b2.positions.some((p) => p.msg === first.msg), 10_000, 'the own device to sync');
      await waitFor(() => a.seen.receipts.some((r) => r.msg === first.msg), 10_000, 'the delivery receipt');
      // On again: the next mark is sent, the one made while off never was.
      b1.c.setReadReceipts(true);
      await waitFor(() => b1.settings.length === 3, 10_000, 'the setting back on');
      const second = await new Sender(a.c).send(bu, 'public');
      await waitFor(() => b1.seen.messages.length === 2, 10_000, 'b1 to receive the second');
      b1.c.markRead(au, second.msg);
      await waitFor(() => a.reads.length > 0, 10_000, 'the read receipt of the second');
      expect(a.reads.map((r) => r.msg)).toEqual([second.msg]);
    });

    it('read marks with bad input get typed errors', async () => {
      const b = await online('b');
      const au = user('a');
      expect(() => b.c.markRead(au, 'someone-else:1')).toThrow(IrisError);
      const raw = await RawSocket.open(target.url, await target.token(b.u));
      raw.send(encodeBinary({ t: 'hello', device: 'raw', cursor: 0, receipts: 0, reads: 0 }));
      await raw.next((f) => f.frame.t === 'settings');
      const cases: { frame: string | Uint8Array; code: ErrorCode }[] = [
        // Nothing from au was ever stored for b.
        { frame: encodeBinary({ t: 'read', conv: au, msg: `${au}:5` }), code: 'bad_ack' },
        // Not an id of that conversation.
        { frame: encodeBinary({ t: 'read', conv: au, msg: `${b.u}:1` }), code: 'invalid_field' },
        { frame: JSON.stringify({ t: 'read', conv: au }), code: 'invalid_field' },
        { frame: JSON.stringify({ t: 'set_settings', readReceipts: 'no' }), code: 'invalid_field' },
      ];
      for (const c of cases) {
        const from = raw.frames.length;
        raw.send(c.frame);
        const { frame } = await raw.next((f) => f.frame.t === 'error', 5_000, from);
        expect(frame.t === 'error' && frame.code, JSON.stringify(c.frame)).toBe(c.code);
      }
      raw.close();
    });

    // ------------------------------------------------------------------ robustness

    it('answers bad frames with typed error frames and keeps other users connected and working', async () => {
      const a = await online('a');
      const b = await online('b');
      const xu = user('x');
      const token = await target.token(xu);

      const expectError = async (raw: RawSocket, from: number, codes: ErrorCode[], text: boolean, ref?: string) => {
        const { frame, text: isText } = await raw.next((f) => f.frame.t === 'error', 5_000, from);
        if (frame.t !== 'error') throw new Error('unreachable');
        expect(codes).toContain(frame.code);
        expect(isText).toBe(text);
        if (ref !== undefined) expect(frame.ref).toBe(ref);
        return frame;
      };

      // A send before hello.
      const r0 = await RawSocket.open(target.url, token);
      r0.send(encodeBinary({ t: 'send', id: 'early-1', to: b.u, body: new Uint8Array([1]) }));
      await expectError(r0, 0, ['hello_required'], false, 'early-1');
      r0.close();

      const cases: { what: string; data: string | Uint8Array; codes: ErrorCode[] }[] = [
        { what: 'garbage binary', data: new Uint8Array([0xff, 0x13, 0x37, 0x00]), codes: ['unknown_type', 'bad_frame'] },
        { what: 'truncated binary', data: new Uint8Array([3, 0x40, 0x61]), codes: ['bad_frame'] },
        { what: 'bad JSON', data: '{"t":"send",', codes: ['bad_frame'] },
        { what: 'oversize frame', data: new Uint8Array(100 * 1024).fill(3), codes: ['frame_too_large'] },
        { what: 'unknown type (JSON)', data: '{"t":"teleport"}', codes: ['unknown_type'] },
        { what: 'unknown type (binary)', data: new Uint8Array([0x63]), codes: ['unknown_type'] },
        { what: 'server frame from a client', data: '{"t":"pong"}', codes: ['unknown_type'] },
      ];
      for (const c of cases) {
        const raw = await RawSocket.open(target.url, token);
        raw.send(JSON.stringify({ t: 'hello', device: `raw${cases.indexOf(c)}`, cursor: 0 }));
        await raw.next((f) => f.frame.t === 'welcome');
        const from = raw.frames.length;
        raw.send(c.data);
        await expectError(raw, from, c.codes, typeof c.data === 'string').catch((e: unknown) => {
          throw new Error(`${c.what}: ${e instanceof Error ? e.message : String(e)}`);
        });
        expect(raw.undecodable, c.what).toEqual([]);
        raw.close();
      }

      // Meanwhile, and afterwards, A and B are untouched.
      const ack = await a.s.send(b.u, 'still here');
      await waitFor(() => b.seen.messages.some((m) => m.msg === ack.msg), 10_000, 'b to receive after the bad frames');
      expect(a.seen.states).toEqual(['connecting', 'open']);
      expect(b.seen.states).toEqual(['connecting', 'open']);
      expect(a.seen.errors).toEqual([]);
      expect(b.seen.errors).toEqual([]);
    });

    it('closes a connection that sends invalid UTF-8 in a text message with 1007 (PROTOCOL.md section 5)', async () => {
      // The WebSocket API cannot send invalid UTF-8; the ws package sends the bytes as they are.
      const ws = new WsSocket(target.url, ['iris.v1', `bearer.${await target.token(user('u8'))}`]);
      const got: string[] = [];
      ws.on('message', (d) => got.push(String(d)));
      const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
      await new Promise<void>((r, j) => {
        ws.once('open', () => r());
        ws.once('error', j);
      });
      ws.send('{"t":"ping","x":"ok"}');
      ws.send(Buffer.from('{"t":"ping","x":"\xc3\x28"}', 'latin1'), { binary: false }); // c3 28: a broken 2-byte sequence
      expect(await closed).toBe(1007);
      // The valid ping before it was answered; the invalid one was never decoded as a frame.
      expect(got).toEqual(['{"t":"pong"}']);
    });

        it('refuses missing, badly signed and expired tokens with HTTP 401 before the upgrade, on every token transport', async () => {
      const u = user('t');
      const good = await target.token(u);
      const [head, payload, sig] = good.split('.') as [string, string, string];
      const badSig = `${head}.${payload}.${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
      const expired = await target.token(u, { expiresIn: '-1h' });

      expect((await upgradeRequest(target.url)).status).toBe(401);
      for (const [what, tok] of [['bad signature', badSig], ['expired', expired], ['not a JWT', 'garbage']] as const) {
        const viaHeader = await upgradeRequest(target.url, { headers: { Authorization: `Bearer ${tok}` } });
        const viaProtocol = await upgradeRequest(target.url, { headers: { 'Sec-WebSocket-Protocol': `iris.v1, bearer.${tok}` } });
        const viaQuery = await upgradeRequest(target.url, { query: { access_token: tok } });
        expect([viaHeader.status, viaProtocol.status, viaQuery.status], what).toEqual([401, 401, 401]);
      }
      // The control: the same request with the good token upgrades.
      expect((await upgradeRequest(target.url, { headers: { Authorization: `Bearer ${good}` } })).status).toBe(101);

      // A standard WebSocket never opens, and the SDK rejects connect() with a typed error.
      await expect(RawSocket.open(target.url, badSig)).rejects.toThrow(/closed before open/);
      // It learns why with a plain GET of the same URL and token, and says so.
      const c = new IrisClient({ url: target.url, token: expired, device: 'd1' });
      const err = await c.connect().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IrisError);
      expect([(err as IrisError).code, (err as IrisError).status, (err as IrisError).reason]).toEqual(['auth_failed', 401, 'token_expired']);
      expect(c.state).toBe('closed');
    });
  });
}
