import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryStore, backoffDelay, type StoredEntry } from '../../client/index.js';
import { FileStore } from '../../client/node-store.js';

const dir = mkdtempSync(join(tmpdir(), 'iris-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('FileStore', () => {
  it('starts empty when the file does not exist, without creating it', () => {
    const s = new FileStore(join(dir, 'none', 'x.json'));
    expect(s.load()).toEqual({ cursor: 0, receipts: 0, reads: 0, outbox: [], unhandled: [] });
    expect(() => readFileSync(join(dir, 'none', 'x.json'))).toThrow();
  });

  it('keeps cursor, outbox (bytes intact, in order) and meta across instances, i.e. across processes', () => {
    const path = join(dir, 'alice-phone.json');
    const a = new FileStore(path);
    a.saveCursor(17);
    a.putPending({ id: 'm1', to: 'bob', body: new Uint8Array([0, 1, 2, 255]), createdAt: 1 });
    a.putPending({ id: 'm2', to: 'carol', body: new TextEncoder().encode('héllo'), createdAt: 2 });
    a.putPending({ id: 'm3', to: 'bob', body: new Uint8Array(0), createdAt: 3 });
    a.deletePending('m2');
    a.setMeta('device', 'phone');

    const b = new FileStore(path);
    const st = b.load();
    expect(st.cursor).toBe(17);
    expect(st.outbox.map((p) => p.id)).toEqual(['m1', 'm3']);
    expect([...st.outbox[0]!.body]).toEqual([0, 1, 2, 255]);
    expect(st.outbox[0]!.to).toBe('bob');
    expect(st.outbox[1]!.body.byteLength).toBe(0);
    expect(b.getMeta('device')).toBe('phone');
  });

  it('keeps the receipt version across instances (written with the next write, or on flush)', () => {
    const path = join(dir, 'receipts.json');
    const a = new FileStore(path);
    a.saveReceipts(12);
    a.flush();
    expect(new FileStore(path).load().receipts).toBe(12);
    a.saveReceipts(13);
    a.saveCursor(2); // any write carries it
    expect(new FileStore(path).load()).toMatchObject({ cursor: 2, receipts: 13 });
  });

  it('keeps the read version across instances the same way', () => {
    const path = join(dir, 'reads.json');
    const a = new FileStore(path);
    a.saveReads(5);
    a.flush();
    expect(new FileStore(path).load().reads).toBe(5);
    a.saveReads(6);
    a.saveCursor(3);
    expect(new FileStore(path).load()).toMatchObject({ cursor: 3, reads: 6 });
  });

  it('refuses a file that is not a store', () => {
    const path = join(dir, 'other.json');
    writeFileSync(path, JSON.stringify({ hello: 1 }));
    expect(() => new FileStore(path)).toThrow(/not an Iris client store/);
  });
});

describe('FileStore: handed-out entries', () => {
  const e = (seq: number): StoredEntry => ({ seq, kind: 'message', msg: `bob:${seq}`, peer: 'bob', ts: seq, body: new Uint8Array([seq]) });

  it('writes entries and cursor in one write; handled ones are forgotten once written (deferred, flushed)', () => {
    const path = join(dir, 'handout.json');
    const a = new FileStore(path, { handledDelayMs: 60_000 });
    a.handOut([e(1), e(2), e(3)], 3);
    // what a process killed right now leaves: all three handed out, cursor 3
    let st = new FileStore(path).load();
    expect([st.cursor, st.unhandled.map((x) => x.seq), [...st.unhandled[1]!.body]]).toEqual([3, [1, 2, 3], [2]]);
    a.markHandled([1, 2]);
    // deferred: a crash now brings 1 and 2 back as recovered, never as new
    expect(new FileStore(path).load().unhandled.map((x) => x.seq)).toEqual([1, 2, 3]);
    a.flush();
    st = new FileStore(path).load();
    expect([st.cursor, st.unhandled.map((x) => x.seq)]).toEqual([3, [3]]);
    a.markHandled([3]);
    a.handOut([e(4)], 4); // the next write carries the deferred mark
    st = new FileStore(path).load();
    expect([st.cursor, st.unhandled.map((x) => x.seq)]).toEqual([4, [4]]);
  });

  it('removes temp files left by dead processes when opened, and keeps those of live ones', () => {
    const path = join(dir, 'tmp.json');
    new FileStore(path).saveCursor(5);
    const dead = 2 ** 22 + 12345; // above pid_max's default: no such process
    writeFileSync(`${path}.${dead}.tmp`, '{"version":1,"cursor":9');
    writeFileSync(`${path}.1.tmp`, 'init is alive');
    const s = new FileStore(path);
    expect(s.load().cursor).toBe(5);
    expect(readdirSync(dir).filter((n) => n.startsWith('tmp.json.'))).toEqual(['tmp.json.1.tmp']);
    rmSync(`${path}.1.tmp`);
  });
});

describe('MemoryStore', () => {
  it('hands out copies, so later mutation of a body cannot change what is resent', () => {
    const s = new MemoryStore();
    const body = new Uint8Array([1, 2, 3]);
    s.putPending({ id: 'a', to: 'bob', body, createdAt: 0 });
    body[0] = 9;
    expect([...s.load().outbox[0]!.body]).toEqual([1, 2, 3]);
  });
});

describe('backoffDelay', () => {
  it('grows exponentially with jitter in [d/2, d] and stops at maxMs', () => {
    const o = { baseMs: 100, maxMs: 1000 };
    expect(backoffDelay(0, o, () => 0)).toBe(50);
    expect(backoffDelay(0, o, () => 1)).toBe(100);
    expect(backoffDelay(3, o, () => 1)).toBe(800);
    expect(backoffDelay(10, o, () => 1)).toBe(1000);
    expect(backoffDelay(10, o, () => 0)).toBe(500);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(2, o);
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});
