import { expect, it } from 'vitest';
import { HELLO_FEATURES, encodeBinary, type ClientFrame, type GroupEntry, type ServerFrame } from '../../../protocol/index.js';
import { RawSocket, waitFor } from '../helpers.js';
import type { ConformanceContext, Feature } from './index.js';

/**
 * Groups (PROTOCOL.md 9.9), black box, on every profile: one order for every member, membership as entries
 * (removal mid-stream, re-adding), catching up from a cursor, refusals that reveal nothing, idempotent sends, the
 * sender's other device. Raw frames: what any client of the protocol would send.
 */

const te = new TextEncoder();
const td = new TextDecoder();

class Device {
  readonly seen: GroupEntry[] = [];
  private taken = 0;
  private constructor(readonly s: RawSocket) {}

  static async open(ctx: ConformanceContext, user: string, device = 'd1'): Promise<Device> {
    const s = await RawSocket.open(ctx.target().url, await ctx.target().token(user));
    s.send(encodeBinary({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.groups }));
    await s.next((f) => f.frame.t === 'welcome');
    return new Device(s);
  }

  send(f: ClientFrame): void {
    this.s.send(encodeBinary(f));
  }

  frames(): ServerFrame[] {
    return this.s.frames.map((f) => f.frame as ServerFrame);
  }

  /** Processes new group_deliver frames (dropping what it already has, as the SDK does) and acknowledges them. */
  take(): void {
    const frames = this.frames().filter((f) => f.t === 'group_deliver').slice(this.taken);
    this.taken += frames.length;
    for (const f of frames) {
      if (f.t !== 'group_deliver' || f.entries.length === 0) continue;
      for (const e of f.entries) if (e.seq > (this.seen.at(-1)?.seq ?? 0)) this.seen.push(e);
      this.send({ t: 'group_ack', group: f.group, seq: f.entries.at(-1)!.seq });
    }
  }

  messages(): string[] {
    return this.seen.filter((e) => e.kind === 'message').map((e) => td.decode(e.body));
  }

  async ack(id: string): Promise<Extract<ServerFrame, { t: 'group_send_ack' }>> {
    const f = await this.s.next((x) => x.frame.t === 'group_send_ack' && x.frame.id === id, 10_000);
    return f.frame as Extract<ServerFrame, { t: 'group_send_ack' }>;
  }

  async error(ref: string): Promise<Extract<ServerFrame, { t: 'error' }>> {
    const f = await this.s.next((x) => x.frame.t === 'error' && x.frame.ref === ref, 10_000);
    return f.frame as Extract<ServerFrame, { t: 'error' }>;
  }
}

const show = (d: Device) => d.seen.map((e) => `${e.seq}:${e.kind}:${e.from}:${e.subject}:${td.decode(e.body)}`);

export const groups: Feature = (ctx) => {
  const open: Device[] = [];
  const device = async (user: string, dev = 'd1') => {
    const d = await Device.open(ctx, user, dev);
    open.push(d);
    return d;
  };
  const closeAll = () => {
    for (const d of open.splice(0)) d.s.close();
  };

  it('groups: every member sees one order across concurrent senders; the sender\'s other device too; a retry gets the same seq', async () => {
    try {
      const [a, b, c] = [ctx.user('ga'), ctx.user('gb'), ctx.user('gc')];
      const group = ctx.user('grp');
      const da = await device(a);
      const da2 = await device(a, 'd2');
      const db = await device(b);
      const dc = await device(c);
      da.send({ t: 'group_create', id: 'create', group, name: 'conformance', members: [b, c] });
      expect((await da.ack('create')).dup).toBe(false);
      const senders = [da, db, dc];
      for (let i = 0; i < 15; i++) senders[i % 3]!.send({ t: 'group_send', id: `m${i}`, group, body: te.encode(`m${i}`) });
      const all = [da, da2, db, dc];
      await waitFor(() => all.every((d) => (d.take(), d.messages().length === 15)), 15_000, 'every device has the 15 messages');
      for (const d of all) expect(show(d)).toEqual(show(da));
      const first = await da.ack('m0');
      da.send({ t: 'group_send', id: 'm0', group, body: te.encode('m0') });
      await waitFor(() => da.frames().filter((f) => f.t === 'group_send_ack' && f.id === 'm0').length === 2, 10_000, 'the retry is answered');
      const again = da.frames().filter((f) => f.t === 'group_send_ack' && f.id === 'm0')[1];
      expect(again).toMatchObject({ seq: first.seq, dup: true });
    } finally {
      closeAll();
    }
  });

  it('groups: a removed member gets its removal and nothing after; re-added, only its new range; an offline member catches up', async () => {
    try {
      const [a, b, c, d] = [ctx.user('ga'), ctx.user('gb'), ctx.user('gc'), ctx.user('gd')];
      const group = ctx.user('grp');
      const da = await device(a);
      const db = await device(b);
      da.send({ t: 'group_create', id: 'create', group, name: 'g', members: [b, c, d] });
      await da.ack('create');
      for (let i = 0; i < 5; i++) da.send({ t: 'group_send', id: `x${i}`, group, body: te.encode(`x${i}`) });
      await waitFor(() => (db.take(), db.messages().length === 5), 10_000, 'b has 5');
      da.send({ t: 'group_remove', id: 'rm', group, member: b });
      const rm = await da.ack('rm');
      for (let i = 5; i < 10; i++) da.send({ t: 'group_send', id: `x${i}`, group, body: te.encode(`x${i}`) });
      await da.ack('x9');
      da.send({ t: 'group_add', id: 'readd', group, members: [b] });
      const readd = await da.ack('readd');
      for (let i = 10; i < 15; i++) da.send({ t: 'group_send', id: `x${i}`, group, body: te.encode(`x${i}`) });
      await waitFor(() => (db.take(), da.take(), db.messages().length === 10 && da.messages().length === 15), 10_000, 'b has its two ranges');
      expect(db.seen.filter((e) => e.seq > rm.seq && e.seq < readd.seq)).toEqual([]);
      expect(db.messages()).toEqual([0, 1, 2, 3, 4, 10, 11, 12, 13, 14].map((i) => `x${i}`));
      // c was offline for all of it: the whole history, once, in the same order as a's.
      const dc = await device(c);
      await waitFor(() => (dc.take(), dc.messages().length === 15), 10_000, 'c catches up');
      expect(show(dc)).toEqual(show(da));
      // Ranges: b sent while removed would have been refused; the roster says who is in.
      db.send({ t: 'group_roster_query', ref: 'r', group });
      const roster = await db.s.next((f) => f.frame.t === 'group_roster', 10_000);
      const members = (roster.frame as Extract<ServerFrame, { t: 'group_roster' }>).members.map((m) => m.user).sort();
      expect(members).toEqual([a, b, c, d].sort());
    } finally {
      closeAll();
    }
  });

  it('groups: the sender learns who received and who read its message (group_receipts)', async () => {
    try {
      const [a, b, c] = [ctx.user('ga'), ctx.user('gb'), ctx.user('gc')];
      const group = ctx.user('grp');
      const da = await device(a);
      const db = await device(b);
      da.send({ t: 'group_create', id: 'create', group, name: 'r', members: [b, c] });
      await da.ack('create');
      da.send({ t: 'group_send', id: 'm', group, body: te.encode('read me') });
      const { seq } = await da.ack('m');
      await waitFor(() => (db.take(), db.messages().length === 1), 10_000, 'b has it');
      db.send({ t: 'group_ack', group, seq, read: seq });
      // Marks reach the group coalesced (about a second): ask until b shows as read.
      let n = 0;
      let asked = 0;
      await waitFor(
        () => {
          const got = da.frames().filter((f) => f.t === 'group_receipts' || (f.t === 'error' && f.ref?.startsWith('q')));
          const last = got.at(-1);
          if (last?.t === 'group_receipts' && last.members.some((m) => m.user === b && m.state === 'read')) return true;
          // One question at a time, at most every 250 ms (each takes a token of the sender's rate).
          if (got.length === n && Date.now() - asked >= 250) {
            asked = Date.now();
            da.send({ t: 'group_receipts_query', ref: `q${++n}`, group, seq });
          }
          return false;
        },
        10_000,
        'b shows as read',
      );
      const last = da.frames().filter((f) => f.t === 'group_receipts').at(-1)!;
      expect(last.t === 'group_receipts' && last.members.find((m) => m.user === c)?.state).toBe('sent');
    } finally {
      closeAll();
    }
  });

  it("groups: a read mark on one device reaches the user's other devices (group_read), and a later connection is told it", async () => {
    try {
      const [a, b] = [ctx.user('ra'), ctx.user('rb')];
      const group = ctx.user('rgrp');
      const da = await device(a);
      const phone = await device(b, 'phone');
      const laptop = await device(b, 'laptop');
      da.send({ t: 'group_create', id: 'create', group, name: 'r', members: [b] });
      await da.ack('create');
      da.send({ t: 'group_send', id: 'm', group, body: te.encode('read me') });
      const { seq } = await da.ack('m');
      await waitFor(() => (phone.take(), phone.messages().length === 1), 10_000, 'the phone has it');
      phone.send({ t: 'group_ack', group, seq, read: seq });
      const got = await laptop.s.next((f) => f.frame.t === 'group_read', 10_000);
      expect(got.frame).toEqual({ t: 'group_read', group, seq });
      const later = await device(b, 'tablet');
      const told = await later.s.next((f) => f.frame.t === 'group_read', 10_000);
      expect(told.frame).toEqual({ t: 'group_read', group, seq });
    } finally {
      closeAll();
    }
  });

  it('groups: a non-member is refused with not_member and learns nothing (no entry, no roster)', async () => {
    try {
      const [a, e] = [ctx.user('ga'), ctx.user('ge')];
      const group = ctx.user('grp');
      const da = await device(a);
      const de = await device(e);
      da.send({ t: 'group_create', id: 'create', group, name: 'closed', members: [] });
      await da.ack('create');
      da.send({ t: 'group_send', id: 's', group, body: te.encode('secret') });
      await da.ack('s');
      de.send({ t: 'group_send', id: 'e1', group, body: te.encode('let me in') });
      de.send({ t: 'group_roster_query', ref: 'e2', group });
      de.send({ t: 'group_add', id: 'e3', group, members: [e] });
      expect([(await de.error('e1')).code, (await de.error('e2')).code, (await de.error('e3')).code]).toEqual(['not_member', 'not_member', 'not_member']);
      expect(de.frames().filter((f) => f.t === 'group_deliver' || f.t === 'group_roster')).toEqual([]);
    } finally {
      closeAll();
    }
  });
};
