import { expect, it } from 'vitest';
import type { IrisClient } from '../../../client/index.js';
import { encodeFrame } from '../../../protocol/index.js';
import { RawSocket, waitFor } from '../helpers.js';
import type { ConformanceContext, Feature } from './index.js';

/**
 * Multi-device sync and history for new devices (PROTOCOL.md 9.10), black box: what one device of a user sends,
 * its other devices see as `sent` entries in the user's order; a device added later starts with the newest
 * IRIS_HISTORY_DEPTH entries (the suite's servers run with 20).
 */

/** What a client saw, in order: "<- from: text" for messages, "-> to: text" for sends of another device. */
function timeline(c: IrisClient): string[] {
  const out: string[] = [];
  c.on('message', (m) => void out.push(`<- ${m.from}: ${m.text()}`));
  c.on('sent', (s) => void out.push(`-> ${s.to}: ${s.text()}`));
  return out;
}

export const sync: Feature = (ctx: ConformanceContext) => {
  it('multi-device sync: a message sent from one device appears on the other as a sent entry, in order', async () => {
    const a = await ctx.online('sync-a');
    const b = await ctx.online('sync-b');
    const a2 = ctx.pool.make(a.u, { device: 'd2' });
    const seen2 = timeline(a2);
    const seen1 = timeline(a.c);
    await a2.connect();
    await b.s.send(a.u, 'before');
    await waitFor(() => seen2.length === 1, 10_000, 'd2 to receive the first message');
    // Listening before the send: on a loaded box the sent entry can reach d2 before d1's ack resolves.
    const sent: { msg: string; to: string; ts: number }[] = [];
    a2.on('sent', (s) => void sent.push({ msg: s.msg, to: s.to, ts: s.ts }));
    const ack = await a.s.send(b.u, 'from d1');
    await waitFor(() => seen2.length === 2, 10_000, "d2 to see d1's send");
    await b.s.send(a.u, 'after');
    await waitFor(() => seen2.length === 3 && seen1.length === 2, 10_000, 'both devices to receive the reply');
    expect(seen2).toEqual([`<- ${b.u}: before`, `-> ${b.u}: from d1`, `<- ${b.u}: after`]);
    expect(sent).toEqual([{ msg: ack.msg, to: b.u, ts: ack.ts }]);
    // The sending device does not get its own send back as an event; the recipient gets only the message.
    expect(seen1).toEqual([`<- ${b.u}: before`, `<- ${b.u}: after`]);
    await waitFor(() => b.seen.messages.length === 1, 10_000, 'b to receive');
    expect(b.seen.texts()).toEqual(['from d1']);
    expect(b.seen.receipts.map((r) => r.msg)).not.toContain(ack.msg);
  });

  it('history: a device added later gets the newest entries of both directions, and no more', async () => {
    const depth = ctx.target().historyDepth ?? 0;
    const a = await ctx.online('hist-a');
    const b = await ctx.online('hist-b');
    // Alternating, b first and last (odd count), each waiting for the other: the order in a's inbox is known.
    const total = depth % 2 === 0 ? depth + 5 : depth + 4;
    const want: string[] = [];
    for (let i = 0; i < total; i++) {
      if (i % 2 === 0) {
        await b.s.send(a.u, `b${i}`);
        want.push(`<- ${b.u}: b${i}`);
        await waitFor(() => a.seen.messages.length === i / 2 + 1, 10_000, 'a to receive');
      } else {
        await a.s.send(b.u, `a${i}`);
        want.push(`-> ${b.u}: a${i}`);
      }
    }
    // d1 processed everything (the last entry is b's message); close flushes its acks, so what d3 gets is
    // history, not a backlog.
    await a.c.close();
    const d3 = ctx.pool.make(a.u, { device: 'd3' });
    const seen3 = timeline(d3);
    const w = await d3.connect();
    expect(w.head - w.cursor).toBe(depth);
    await waitFor(() => seen3.length === depth, 10_000, 'd3 to receive the history');
    expect(seen3).toEqual(want.slice(want.length - depth));
    // The newest entry is the last one; nothing more arrives.
    await d3.presence([a.u]);
    expect(seen3).toHaveLength(depth);
  });

  it('multi-device sync: a client without the sync feature is not shown sent entries, and gets what follows them', async () => {
    const a = await ctx.online('old-a');
    const b = await ctx.online('old-b');
    // An older client: binary hello without `sync`, acking everything it is shown.
    const raw = await RawSocket.open(ctx.target().url, await ctx.target().token(a.u));
    raw.send(encodeFrame({ t: 'hello', device: 'old', cursor: 0, receipts: 0, reads: 0 }, 'binary'));
    await raw.next((f) => f.frame.t === 'welcome');
    for (let i = 0; i < 5; i++) await a.s.send(b.u, `mine ${i}`);
    await b.s.send(a.u, 'to both');
    const got = await raw.next((f) => f.frame.t === 'deliver');
    const entries = raw.frames.flatMap((f) => (f.frame.t === 'deliver' ? f.frame.entries : []));
    expect(entries.map((e) => e.kind)).toEqual(['message']);
    expect(got.frame.t === 'deliver' && new TextDecoder().decode(got.frame.entries[0]!.body)).toBe('to both');
    // Its ack covers the skipped entries: acked at the server, nothing comes again on a new connection.
    raw.send(encodeFrame({ t: 'deliver_ack', seq: entries[0]!.seq }, 'binary'));
    raw.close();
    const again = await RawSocket.open(ctx.target().url, await ctx.target().token(a.u));
    again.send(encodeFrame({ t: 'hello', device: 'old', cursor: 0, receipts: 0, reads: 0 }, 'binary'));
    const w = await again.next((f) => f.frame.t === 'welcome');
    expect(w.frame.t === 'welcome' && w.frame.cursor).toBe(entries[0]!.seq);
    expect(raw.undecodable).toEqual([]);
    again.close();
  });
};
