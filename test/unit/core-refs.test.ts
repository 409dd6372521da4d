import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { SCHEMA_VERSION, migrate } from '../../core/schema.js';
import { MailboxStore } from '../../core/store.js';
import { checkRef, oneToOneContext, parseMessageId } from '../../core/refs.js';
import { Dec, decodeForward, encodeForward } from '../../onprem/links.js';
import { HELLO_FEATURES, type MessageRef } from '../../protocol/index.js';
import { World, type FakeConn } from './core-harness.js';

/**
 * Message references (PROTOCOL.md 9.9): reply, edit, delete for everyone and reactions are messages that name an
 * earlier message. The sender's shard checks who may refer to what (core/refs.ts) before it accepts; everything
 * else is a message's life: its own id, ack, exactly-once delivery, receipts. Both paths: forwarded between
 * shards, and one hop (handed over in the sender's commit).
 */

const enc = new TextEncoder();

async function helloRefs(c: FakeConn, device: string): Promise<void> {
  await c.frame({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.refs });
}

async function refer(c: FakeConn, to: string, id: string, ref: MessageRef, body = ''): Promise<void> {
  await c.frame({ t: 'send', id, to, body: enc.encode(body), ref });
}

const lastError = (c: FakeConn) => c.of('error').at(-1);

for (const oneHop of [false, true]) {
  describe(`message references (${oneHop ? 'one hop' : 'forwarded'})`, () => {
    async function setUp(config: ConstructorParameters<typeof World>[0] = {}) {
      const w = new World(config, false, oneHop);
      const a = w.connect('alice');
      const b = w.connect('bob');
      await helloRefs(a, 'a1');
      await helloRefs(b, 'b1');
      await a.post('bob', 'hello bob', 'a-1');
      return { w, a, b };
    }

    it('a reaction and a reply reach the other side with their reference, as messages of their own', async () => {
      const { a, b } = await setUp();
      expect(b.entries().map((e) => e.msg)).toEqual(['alice:1']);
      await refer(b, 'alice', 'b-1', { kind: 'react', msg: 'alice:1' }, '👍');
      await refer(b, 'alice', 'b-2', { kind: 'reply', msg: 'alice:1' }, 'hi alice');
      expect(b.of('send_ack').map((x) => x.msg)).toEqual(['bob:1', 'bob:2']);
      expect(b.of('error')).toEqual([]);
      const got = a.entries();
      expect(got.map((e) => [e.msg, e.peer, e.ref, new TextDecoder().decode(e.body)])).toEqual([
        ['bob:1', 'bob', { kind: 'react', msg: 'alice:1' }, '👍'],
        ['bob:2', 'bob', { kind: 'reply', msg: 'alice:1' }, 'hi alice'],
      ]);
      // Receipts as usual: bob learns that both were delivered once alice acks.
      await a.ack(got.at(-1)!.seq);
      expect(b.receipts().at(-1)?.msg).toBe('bob:2');
    });

    it('the sender edits and deletes its own message; the edit carries the new body, the delete none', async () => {
      const { a, b } = await setUp();
      await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:1' }, 'hello, bob');
      await refer(a, 'bob', 'a-3', { kind: 'delete', msg: 'alice:1' });
      expect(a.of('error')).toEqual([]);
      expect(b.entries().map((e) => [e.msg, e.ref?.kind, e.body.length])).toEqual([
        ['alice:1', undefined, 9],
        ['alice:2', 'edit', 10],
        ['alice:3', 'delete', 0],
      ]);
    });

    it("an edit or a delete of someone else's message is refused with ref_not_allowed, and stores nothing", async () => {
      const { w, a, b } = await setUp();
      const before = { dedup: w.count('dedup', 'bob'), outbox: w.count('outbox', 'bob'), inbox: w.count('inbox', 'alice') };
      await refer(b, 'alice', 'b-1', { kind: 'delete', msg: 'alice:1' });
      expect(lastError(b)).toMatchObject({ code: 'ref_not_allowed', ref: 'b-1' });
      await refer(b, 'alice', 'b-2', { kind: 'edit', msg: 'alice:1' }, 'mine now');
      expect(lastError(b)).toMatchObject({ code: 'ref_not_allowed', ref: 'b-2' });
      expect(b.of('send_ack')).toEqual([]);
      expect({ dedup: w.count('dedup', 'bob'), outbox: w.count('outbox', 'bob'), inbox: w.count('inbox', 'alice') }).toEqual(before);
      expect(a.entries()).toEqual([]);
      // The refusal is final, not "not now": the next send goes through at once.
      await b.post('alice', 'sorry', 'b-3');
      expect(b.of('send_ack').map((x) => x.id)).toEqual(['b-3']);
    });

    it('a delete after the window, or an edit after its shorter one, is refused with ref_expired', async () => {
      const { w, a, b } = await setUp({ editWindowS: 900, deleteWindowS: 172_800 });
      await w.advance(900_001);
      await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:1' }, 'too late');
      expect(lastError(a)).toMatchObject({ code: 'ref_expired', ref: 'a-2' });
      await refer(a, 'bob', 'a-3', { kind: 'delete', msg: 'alice:1' });
      expect(a.of('send_ack').map((x) => x.id)).toEqual(['a-1', 'a-3']);
      await a.post('bob', 'again', 'a-4');
      await w.advance(172_800_001);
      // A refused send takes no number: a-3 became alice:2, a-4 alice:3.
      await refer(a, 'bob', 'a-5', { kind: 'delete', msg: 'alice:3' });
      expect(lastError(a)).toMatchObject({ code: 'ref_expired', ref: 'a-5' });
      expect(b.entries().map((e) => e.msg)).toEqual(['alice:1', 'alice:2', 'alice:3']);
    });

    it('a window of 0 turns edits off', async () => {
      const { a } = await setUp({ editWindowS: 0 });
      await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:1' }, 'x');
      expect(lastError(a)).toMatchObject({ code: 'ref_expired' });
    });

    it('a message older than the dedup window can no longer be deleted: its acceptance time is gone', async () => {
      const { w, a } = await setUp({ dedupWindow: 10, ratePerSec: 1e6, rateBurst: 1e6, inboxCap: 1e6 });
      for (let i = 2; i <= 256; i++) await a.post('bob', `m${i}`, `a-${i}`);
      expect(w.count('dedup', 'alice')).toBeLessThan(256);
      await refer(a, 'bob', 'a-x', { kind: 'delete', msg: 'alice:1' });
      expect(lastError(a)).toMatchObject({ code: 'ref_expired', ref: 'a-x' });
      await refer(a, 'bob', 'a-y', { kind: 'delete', msg: 'alice:256' });
      expect(a.of('send_ack').at(-1)?.id).toBe('a-y');
    });

    it('a reference to a message of another conversation is refused where that is checkable', async () => {
      const { a, b } = await setUp();
      const carol = b.world.connect('carol');
      await helloRefs(carol, 'c1');
      await carol.post('bob', 'from carol', 'c-1');
      await a.post('carol', 'to carol', 'a-2');
      // A message of a third user, in bob's conversation with alice.
      await refer(b, 'alice', 'b-1', { kind: 'react', msg: 'carol:1' }, '❤');
      expect(lastError(b)).toMatchObject({ code: 'ref_not_allowed', ref: 'b-1' });
      // alice's own message, but sent to carol: not in her conversation with bob.
      await refer(a, 'bob', 'a-3', { kind: 'react', msg: 'alice:2' }, '❤');
      expect(lastError(a)).toMatchObject({ code: 'ref_not_allowed', ref: 'a-3' });
      await refer(a, 'bob', 'a-4', { kind: 'delete', msg: 'alice:2' });
      expect(lastError(a)).toMatchObject({ code: 'ref_not_allowed', ref: 'a-4' });
      expect(b.entries().map((e) => e.msg)).toEqual(['alice:1', 'carol:1']);
    });

    it('a reference to a message that does not exist, or to no message id at all, is bad_ref', async () => {
      const { a, b } = await setUp();
      await refer(b, 'alice', 'b-1', { kind: 'reply', msg: 'alice:2' }, 'not yet sent');
      expect(lastError(b)).toMatchObject({ code: 'bad_ref', ref: 'b-1' });
      await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:7' }, 'x');
      expect(lastError(a)).toMatchObject({ code: 'bad_ref', ref: 'a-2' });
      await refer(a, 'bob', 'a-3', { kind: 'react', msg: 'no-number' }, 'x');
      expect(lastError(a)).toMatchObject({ code: 'bad_ref', ref: 'a-3' });
    });

    it('is idempotent like any send: the same client id answers the original ack and stores nothing new', async () => {
      const { w, a, b } = await setUp();
      await refer(b, 'alice', 'b-1', { kind: 'react', msg: 'alice:1' }, '👍');
      await refer(b, 'alice', 'b-1', { kind: 'react', msg: 'alice:1' }, '👍');
      expect(b.of('send_ack').map((x) => [x.msg, x.dup])).toEqual([
        ['bob:1', false],
        ['bob:1', true],
      ]);
      expect(a.entries()).toHaveLength(1);
      expect(w.count('dedup', 'bob')).toBe(1);
      // Even once the window closed: the retry of an accepted delete is answered, not refused.
      await refer(a, 'bob', 'a-2', { kind: 'delete', msg: 'alice:1' });
      await w.advance(172_800_001);
      await refer(a, 'bob', 'a-2', { kind: 'delete', msg: 'alice:1' });
      expect(a.of('send_ack').map((x) => [x.id, x.dup])).toEqual([
        ['a-1', false],
        ['a-2', false],
        ['a-2', true],
      ]);
    });

    it('a client written before references gets a reply as a plain message, and no edit, delete or reaction', async () => {
      const { w, a } = await setUp();
      const old = w.connect('bob');
      await old.hello('b2');
      expect(old.entries().map((e) => e.msg)).toEqual(['alice:1']);
      await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:1' }, 'edited');
      await refer(a, 'bob', 'a-3', { kind: 'reply', msg: 'alice:1' }, 'and more');
      await refer(a, 'bob', 'a-4', { kind: 'delete', msg: 'alice:1' });
      const got = old.entries();
      expect(got.map((e) => [e.msg, e.ref])).toEqual([
        ['alice:1', undefined],
        ['alice:3', undefined],
      ]);
      // Its acknowledgement of the reply is accepted; what was left out after it is covered by a later ack.
      await old.ack(got.at(-1)!.seq);
      expect(old.of('error')).toEqual([]);
      await a.post('bob', 'plain', 'a-5');
      await old.ack(old.entries().at(-1)!.seq);
      expect(old.of('error')).toEqual([]);
      // A new device that resumes from scratch gets the same, from storage this time.
      const again = w.connect('bob');
      await again.hello('b3');
      expect(again.entries().map((e) => e.msg)).toEqual(['alice:1', 'alice:3', 'alice:5']);
    });
  });
}

describe('a reference waiting in the outbox', () => {
  it('survives a restart of the sender and a failed forward, and arrives with its ref', async () => {
    const w = new World();
    const a = w.connect('alice');
    const b = w.connect('bob');
    await helloRefs(a, 'a1');
    await helloRefs(b, 'b1');
    await a.post('bob', 'hi', 'a-1');
    w.failForwards.set('bob', 2);
    await refer(a, 'bob', 'a-2', { kind: 'edit', msg: 'alice:1' }, 'hi!');
    expect(a.of('send_ack').map((x) => x.id)).toEqual(['a-1', 'a-2']);
    expect(b.entries()).toHaveLength(1);
    // The shard goes away: its outbox mirror with it; the retry reads the row back from SQL.
    w.evict('alice');
    w.wakes.set('alice', w.now);
    for (let i = 0; i < 5 && b.entries().length < 2; i++) await w.advance(60_000);
    expect(b.entries().map((e) => [e.msg, e.ref])).toEqual([
      ['alice:1', undefined],
      ['alice:2', { kind: 'edit', msg: 'alice:1' }],
    ]);
  });
});

describe('core/refs.ts rules, without a mailbox', () => {
  const ctx = (over: Partial<Parameters<typeof oneToOneContext>[0]> = {}) =>
    oneToOneContext({
      user: 'alice',
      peer: 'bob',
      now: 1_000_000,
      editWindowS: 60,
      deleteWindowS: 600,
      nextN: () => 5,
      peerLastN: () => 3,
      sent: (n) => (n === 4 ? { ts: 1_000_000 - 30_000, peer: 'bob' } : n === 2 ? { ts: 0, peer: '' } : undefined),
      ...over,
    });

  it('parses `<sender>:<n>` only', () => {
    expect(parseMessageId('alice:12')).toEqual({ sender: 'alice', n: 12 });
    for (const bad of ['alice', 'alice:0', 'alice:01', ':3', 'a b:3', 'alice:1.5']) expect(parseMessageId(bad), bad).toBeUndefined();
  });

  it('gives each refusal its code', () => {
    expect(checkRef({ kind: 'edit', msg: 'alice:4' }, ctx())).toEqual({ ok: true });
    expect(checkRef({ kind: 'react', msg: 'bob:3' }, ctx())).toEqual({ ok: true });
    expect(checkRef({ kind: 'react', msg: 'bob:4' }, ctx())).toMatchObject({ code: 'bad_ref' });
    expect(checkRef({ kind: 'delete', msg: 'bob:3' }, ctx())).toMatchObject({ code: 'ref_not_allowed' });
    expect(checkRef({ kind: 'reply', msg: 'carol:1' }, ctx())).toMatchObject({ code: 'ref_not_allowed' });
    expect(checkRef({ kind: 'edit', msg: 'alice:4' }, ctx({ now: 1_000_000 + 31_000 }))).toMatchObject({ code: 'ref_expired' });
    // Unknown recipient (a record from before schema migration 7): the conversation is not checked.
    expect(checkRef({ kind: 'react', msg: 'alice:2' }, ctx())).toEqual({ ok: true });
    // A reply to one's own message older than the dedup window: allowed; an edit of it: expired.
    expect(checkRef({ kind: 'reply', msg: 'alice:1' }, ctx())).toEqual({ ok: true });
    expect(checkRef({ kind: 'edit', msg: 'alice:1' }, ctx())).toMatchObject({ code: 'ref_expired' });
  });
});

describe('the on-prem link carries references', () => {
  it('forward items round-trip with and without a reference', () => {
    const batch = {
      from: 'bob',
      items: [
        { n: 1, kind: 'message' as const, msg: 'bob:1', ts: 5, body: enc.encode('x') },
        { n: 2, kind: 'message' as const, msg: 'bob:2', ts: 6, body: new Uint8Array(0), ref: { kind: 'delete' as const, msg: 'bob:1' } },
      ],
    };
    const d = new Dec(encodeForward(7, 'alice', batch).subarray(4));
    d.u8();
    d.u32();
    expect(decodeForward(d)).toEqual({ to: 'alice', batch });
  });
});

describe('schema migration for references', () => {
  type SqlAll = { all<T>(q: string, ...p: (string | number | null | Uint8Array)[]): T[] };
  const open = (): SqlAll => {
    const db = new DatabaseSync(':memory:');
    return { all: <T>(q: string, ...p: (string | number | null | Uint8Array)[]): T[] => db.prepare(q).all(...p) as T[] };
  };
  /** The version before the migration that adds the reference columns, found by its effect, not pinned (features
   *  built in parallel may put their migrations before it at merge). */
  function versionBeforeRefs(): number {
    const probe = open();
    for (let v = 1; v <= SCHEMA_VERSION; v++) {
      migrate(probe, 1, v);
      if (probe.all(`SELECT name FROM pragma_table_info('inbox') WHERE name = 'ref_kind'`).length > 0) return v - 1;
    }
    throw new Error('no migration adds inbox.ref_kind');
  }

  it('rows written before it read as messages without a reference, and a dedup record without a recipient', () => {
    const sql = open();
    migrate(sql, 1, versionBeforeRefs());
    sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('alice', 1, 3, 0, 0, 0)`);
    sql.all(`INSERT INTO outbox (user, n, recipient, kind, msg, ts, body) VALUES ('alice', 2, 'bob', 1, 'alice:2', 7, x'01')`);
    sql.all(`INSERT INTO dedup (user, cid, n, ts) VALUES ('alice', 'c2', 2, 7)`);
    sql.all(`INSERT INTO inbox (user, seq, kind, msg, peer, ts, body, n) VALUES ('alice', 1, 1, 'bob:1', 'bob', 5, x'02', 1)`);
    expect(migrate(sql, 2)).toBe(SCHEMA_VERSION);
    const store = new MailboxStore(sql, 'alice');
    expect(store.outboxFor('bob', 10)).toEqual([{ n: 2, kind: 'message', msg: 'alice:2', ts: 7, body: new Uint8Array([1]) }]);
    expect(store.inboxRange(0, 10)).toEqual([{ seq: 1, kind: 'message', msg: 'bob:1', peer: 'bob', ts: 5, body: new Uint8Array([2]) }]);
    expect(store.dedupSent(2)).toEqual({ ts: 7, peer: '' });
    // Written after it: the reference and the recipient are kept.
    const n = store.accept('c3', 9, 'bob');
    store.outboxPut('bob', n, 'message', `alice:${n}`, 9, new Uint8Array(0), { kind: 'delete', msg: 'alice:2' });
    store.forget();
    expect(store.outboxFor('bob', 10).at(-1)).toMatchObject({ n: 3, ref: { kind: 'delete', msg: 'alice:2' } });
    expect(store.dedupSent(3)).toEqual({ ts: 9, peer: 'bob' });
  });
});
