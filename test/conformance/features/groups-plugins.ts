import { expect, it } from 'vitest';
import { HELLO_FEATURES, encodeBinary, type ClientFrame, type GroupEntry, type ServerFrame } from '../../../protocol/index.js';
import { RawSocket, waitFor } from '../helpers.js';
import type { ConformanceContext, Feature } from './index.js';

/**
 * What 1:1 features plug into groups (issue 10), black box, on every profile: typing in a group (PROTOCOL.md 8.8)
 * and a new device's group history (9.11). Raw frames, as any client of the protocol would send them.
 */

const te = new TextEncoder();
const FEATURES = HELLO_FEATURES.groups | HELLO_FEATURES.typing;

class Dev {
  readonly seen: GroupEntry[] = [];
  private taken = 0;
  private constructor(readonly s: RawSocket) {}

  static async open(ctx: ConformanceContext, user: string, device = 'd1', features = FEATURES): Promise<Dev> {
    const s = await RawSocket.open(ctx.target().url, await ctx.target().token(user));
    s.send(encodeBinary({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features }));
    await s.next((f) => f.frame.t === 'welcome');
    return new Dev(s);
  }

  send(f: ClientFrame): void {
    this.s.send(encodeBinary(f));
  }

  frames(): ServerFrame[] {
    return this.s.frames.map((f) => f.frame as ServerFrame);
  }

  of<T extends ServerFrame['t']>(t: T): Extract<ServerFrame, { t: T }>[] {
    return this.frames().filter((f): f is Extract<ServerFrame, { t: T }> => f.t === t);
  }

  /** Processes new group_deliver frames (dropping what it has, as the SDK does) and acknowledges them. */
  take(): void {
    const frames = this.of('group_deliver').slice(this.taken);
    this.taken += frames.length;
    for (const f of frames) {
      if (f.entries.length === 0) continue;
      for (const e of f.entries) if (e.seq > (this.seen.at(-1)?.seq ?? 0)) this.seen.push(e);
      this.send({ t: 'group_ack', group: f.group, seq: f.entries.at(-1)!.seq });
    }
  }

  async ack(id: string): Promise<Extract<ServerFrame, { t: 'group_send_ack' }>> {
    const f = await this.s.next((x) => x.frame.t === 'group_send_ack' && x.frame.id === id, 10_000);
    return f.frame as Extract<ServerFrame, { t: 'group_send_ack' }>;
  }

  /** Waits until this device processed every entry up to `seq`. */
  async upTo(seq: number, what: string): Promise<void> {
    await waitFor(
      () => {
        this.take();
        return (this.seen.at(-1)?.seq ?? 0) >= seq;
      },
      20_000,
      what,
    );
  }
}

export const groupsPlugins: Feature = (ctx) => {
  const open: Dev[] = [];
  const dev = async (user: string, device = 'd1') => {
    const d = await Dev.open(ctx, user, device);
    open.push(d);
    return d;
  };
  const closeAll = () => {
    for (const d of open.splice(0)) d.s.close();
  };

  it('groups: typing reaches the online members but the typer, on then off; a removed member is refused not_member and reaches nobody', async () => {
    try {
      const [a, b, c] = [ctx.user('ta'), ctx.user('tb'), ctx.user('tc')];
      const group = ctx.user('tgrp');
      const da = await dev(a);
      const da2 = await dev(a, 'd2');
      const db = await dev(b);
      const dc = await dev(c);
      da.send({ t: 'group_create', id: 'create', group, name: 'typing', members: [b, c] });
      const created = await da.ack('create');
      await db.upTo(created.seq, 'b sees the group');
      await dc.upTo(created.seq, 'c sees the group');
      da.send({ t: 'typing', conv: group, on: true });
      for (const d of [db, dc]) await waitFor(() => d.of('typing_state').length === 1, 5_000, 'the typing on');
      for (const d of [db, dc]) expect(d.of('typing_state')[0]).toMatchObject({ conv: group, from: a, on: true });
      da.send({ t: 'typing', conv: group, on: false });
      for (const d of [db, dc]) await waitFor(() => d.of('typing_state').length === 2, 5_000, 'the typing off');
      expect(db.of('typing_state')[1]).toMatchObject({ conv: group, from: a, on: false, ttl: 0 });
      // c removed: its typing is refused with the group as ref, and reaches nobody.
      da.send({ t: 'group_remove', id: 'rm', group, member: c });
      await da.ack('rm');
      dc.send({ t: 'typing', conv: group, on: true });
      await dc.s.next((x) => x.frame.t === 'error' && x.frame.code === 'not_member' && x.frame.ref === group, 10_000);
      // The sentinel: a group message after c's typing reaches b; no typing of c came before it.
      da.send({ t: 'group_send', id: 'sentinel', group, body: te.encode('sentinel') });
      const s = await da.ack('sentinel');
      await db.upTo(s.seq, 'the sentinel');
      expect(db.of('typing_state').filter((t) => t.from === c)).toEqual([]);
      expect([...da.of('typing_state'), ...da2.of('typing_state')]).toEqual([]);
    } finally {
      closeAll();
    }
  }, 60_000);

  it('groups: a device new to its user starts by the history depth (what known devices acknowledged is not all sent again), with no history_gap', async () => {
    try {
      const depth = ctx.target().historyDepth ?? 0;
      const [a, b] = [ctx.user('ha'), ctx.user('hb')];
      const group = ctx.user('hgrp');
      const da = await dev(a);
      const db = await dev(b);
      da.send({ t: 'group_create', id: 'create', group, name: 'history', members: [b] });
      await da.ack('create');
      // Enough that a's device stores its cursor in the group (every 64-127 entries acknowledged).
      const n = 140;
      for (let i = 0; i < n; i++) db.send({ t: 'group_send', id: `m${i}`, group, body: te.encode(`m${i}`) });
      const last = await db.ack(`m${n - 1}`);
      await da.upTo(last.seq, 'a got every message');
      // A roster answer comes after the server handled a's acks (one connection, in order).
      da.send({ t: 'group_roster_query', ref: 'q', group });
      await da.s.next((x) => x.frame.t === 'group_roster' && x.frame.ref === 'q', 10_000);
      const laptop = await dev(a, 'laptop');
      await laptop.upTo(last.seq, 'the new device reaches the head');
      const seqs = laptop.seen.map((e) => e.seq);
      // A contiguous tail ending at the head, at least `depth` long, not the whole log from the create.
      expect(seqs.at(-1)).toBe(last.seq);
      expect(seqs.length).toBeGreaterThanOrEqual(Math.min(depth, last.seq));
      expect(seqs[0]).toBeGreaterThan(1);
      expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i));
      expect(laptop.of('error')).toEqual([]);
    } finally {
      closeAll();
    }
  }, 60_000);

  it('groups: replies, edits, deletes and reactions refer to a seq; the sender alone edits; a client without refs gets the reply as a plain message and nothing else', async () => {
    try {
      const [a, b, c] = [ctx.user('ra'), ctx.user('rb'), ctx.user('rc')];
      const group = ctx.user('rgrp');
      const da = await Dev.open(ctx, a, 'd1', FEATURES | HELLO_FEATURES.refs);
      const db = await Dev.open(ctx, b, 'd1', FEATURES | HELLO_FEATURES.refs);
      const old = await Dev.open(ctx, c, 'd1', HELLO_FEATURES.groups);
      open.push(da, db, old);
      da.send({ t: 'group_create', id: 'create', group, name: 'refs', members: [b, c] });
      await da.ack('create');
      da.send({ t: 'group_send', id: 'm', group, body: te.encode('hello') });
      const m = String((await da.ack('m')).seq);
      db.send({ t: 'group_send', id: 'r', group, body: te.encode('re'), ref: { kind: 'reply', msg: m } });
      await db.ack('r');
      db.send({ t: 'group_send', id: 'bad-edit', group, body: te.encode('x'), ref: { kind: 'edit', msg: m } });
      await db.s.next((x) => x.frame.t === 'error' && x.frame.ref === 'bad-edit' && x.frame.code === 'ref_not_allowed', 10_000);
      db.send({ t: 'group_send', id: 'x', group, body: te.encode('+1'), ref: { kind: 'react', msg: m } });
      await db.ack('x');
      da.send({ t: 'group_send', id: 'e', group, body: te.encode('hello!'), ref: { kind: 'edit', msg: m } });
      await da.ack('e');
      da.send({ t: 'group_send', id: 'last', group, body: te.encode('last') });
      const last = (await da.ack('last')).seq;
      await db.upTo(last, 'b gets every entry');
      expect(db.seen.filter((e) => e.ref).map((e) => [e.ref!.kind, e.ref!.msg])).toEqual([
        ['reply', m],
        ['react', m],
        ['edit', m],
      ]);
      await old.upTo(last, 'the old client gets what it can read');
      const oldMsgs = old.seen.filter((e) => e.kind === 'message');
      expect(oldMsgs.map((e) => new TextDecoder().decode(e.body))).toEqual(['hello', 're', 'last']);
      expect(oldMsgs.every((e) => e.ref === undefined)).toBe(true);
    } finally {
      closeAll();
    }
  }, 60_000);
};
