import { describe, expect, it } from 'vitest';
import type { IrisError, IrisTyping } from '../../../client/index.js';
import { HELLO_FEATURES, encodeJson } from '../../../protocol/index.js';
import { RawSocket, waitFor } from '../helpers.js';
import type { ConformanceContext } from './index.js';

/**
 * Typing indicators (PROTOCOL.md 8.8), black box, on every profile: delivered to the other party's online
 * devices, stopped by the server when the typing connection goes away, never queued for a user who connects
 * later. Every check waits for an event; "nothing arrived" is checked against a later sentinel message.
 */
export function typingFeature({ online, pool, target }: ConformanceContext): void {
  describe('typing', () => {
    /** A connected user that records typing events and errors. */
    async function typist(label: string, device?: string) {
      const x = await online(label, device === undefined ? {} : { device });
      const events: IrisTyping[] = [];
      const errors: IrisError[] = [];
      x.c.on('typing', (t) => void events.push(t));
      x.c.on('error', (e) => void errors.push(e));
      return { ...x, events, errors };
    }

    it("reaches the peer's online devices (not the typer's own), on then off", async () => {
      const a = await typist('a');
      const a2 = pool.make(a.u, { device: 'd2' });
      const a2events: IrisTyping[] = [];
      a2.on('typing', (t) => void a2events.push(t));
      await a2.connect();
      const b = await typist('b');
      a.c.typing(b.u);
      // Within the TTL (5 s by default): the SDK would turn it off by itself after that.
      await waitFor(() => b.events.length === 1, 5_000, 'the typing on');
      expect(b.events[0]).toEqual({ conv: a.u, from: a.u, on: true });
      a.c.typing(b.u, false);
      await waitFor(() => b.events.length === 2, 5_000, 'the typing off');
      expect(b.events[1]).toEqual({ conv: a.u, from: a.u, on: false });
      // The sentinel: a message from b reaches a2 after anything b's typing could have caused there.
      await b.c.send(a.u, 'sentinel');
      const got: string[] = [];
      a2.on('message', (m) => void got.push(m.msg));
      await waitFor(() => got.length === 1, 10_000, 'the sentinel');
      expect(a2events).toEqual([]);
      expect(a.events).toEqual([]);
    }, 60_000);

    it('a typer that disconnects while typing: the server sends the stop', async () => {
      const a = await typist('a');
      const b = await typist('b');
      // b reads the wire itself, so that the off seen is the server's and not the SDK's own expiry.
      const raw = await RawSocket.open(target().url, await target().token(b.u));
      raw.send(encodeJson({ t: 'hello', device: 'raw', cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.typing }));
      await raw.next((f) => f.frame.t === 'welcome');
      a.c.typing(b.u);
      const on = await raw.next((f) => f.frame.t === 'typing_state');
      expect(on.frame).toMatchObject({ t: 'typing_state', conv: a.u, from: a.u, on: true });
      const ttl = on.frame.t === 'typing_state' ? on.frame.ttl : 0;
      expect(ttl).toBeGreaterThan(0);
      await a.c.close();
      const off = await raw.next((f) => f.frame.t === 'typing_state' && !f.frame.on, 10_000);
      expect(off.frame).toEqual({ t: 'typing_state', conv: a.u, from: a.u, on: false, ttl: 0 });
      await waitFor(() => b.events.length === 2, 10_000, "b's SDK to show the stop");
      expect(b.events.map((e) => e.on)).toEqual([true, false]);
      raw.close();
    }, 60_000);

    it('never queued: a user who connects later gets nothing; once it is back, typing reaches it', async () => {
      const b = await typist('b');
      await b.c.close();
      const a = await typist('a');
      a.c.typing(b.u);
      // b comes back on another device and writes to a, so a has heard from it.
      const b2 = pool.make(b.u, { device: 'd2' });
      const b2events: IrisTyping[] = [];
      const b2got: string[] = [];
      b2.on('typing', (t) => void b2events.push(t));
      b2.on('message', (m) => void b2got.push(m.msg));
      await b2.connect();
      const aGot: string[] = [];
      a.c.on('message', (m) => void aGot.push(m.msg));
      await b2.send(a.u, 'back');
      await waitFor(() => aGot.length === 1, 10_000, "b's message");
      const sentinel = await a.c.send(b.u, 'sentinel');
      await waitFor(() => b2got.includes(sentinel.msg), 10_000, 'the sentinel');
      expect(b2events).toEqual([]);
      a.c.typing(b.u, false);
      a.c.typing(b.u);
      await waitFor(() => b2events.length === 1, 5_000, 'the typing on');
      expect(b2events[0]).toEqual({ conv: a.u, from: a.u, on: true });
    }, 60_000);

    it('typing to oneself is refused with invalid_field', async () => {
      const a = await typist('a');
      a.c.typing(a.u);
      await waitFor(() => a.errors.length === 1, 10_000, 'the refusal');
      expect(a.errors[0]!.code).toBe('invalid_field');
    }, 30_000);
  });
}
