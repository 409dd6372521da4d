import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { GroupCommitStorage } from '../../onprem/storage.js';
import { removeDir, tempDir } from './helpers.js';

/**
 * Lazy commits (core/ports.ts CommitOptions.lazy) in the group commit (onprem/storage.ts): a batch of only lazy
 * writes is COMMITted without an fsync; the next durable batch's fsync, settled(), or lazyFlushMs later covers
 * them. In cluster mode the fsync is the partition log's append, so this is what saves the records
 * (test/cluster/storage.test.ts checks that end).
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

const body = new Uint8Array([1]);
const insert = (s: GroupCommitStorage, seq: number) => s.sql.all(`INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES ('u', ?, 1, 'm', 'p', 0, ?)`, seq, body);
const count = (s: GroupCommitStorage) => s.sql.all<{ c: number }>(`SELECT count(*) AS c FROM inbox`)[0]!.c;

/** Rows another connection sees: what was COMMITted. */
function committed(file: string): number {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    return (db.prepare(`SELECT count(*) AS c FROM inbox`).get() as { c: number }).c;
  } finally {
    db.close();
  }
}

/** An fsync the test completes by hand; `next()` resolves at the next call. */
function heldFsync() {
  const calls: ((err: Error | null) => void)[] = [];
  let wake: (() => void) | null = null;
  return {
    calls,
    fsync: (_fd: number, done: (err: Error | null) => void) => {
      calls.push(done);
      wake?.();
    },
    next: () => new Promise<void>((r) => (wake = r)),
  };
}

function open(opts: { lazyFlushMs?: number; sync?: 'async' | 'commit' } = {}) {
  const d = tempDir('iris-lazy-');
  dirs.push(d);
  const file = join(d, 'w.sqlite');
  const f = heldFsync();
  const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000, sync: opts.sync ?? 'async', fsync: f.fsync, lazyFlushMs: opts.lazyFlushMs ?? 60_000 });
  return { s, f, file };
}

describe('group commit: lazy commits', () => {
  it('a lazy-only batch is committed and resolved without an fsync; a durable read after it needs none either', async () => {
    const { s, f, file } = open();
    await Promise.all([1, 2, 3].map((i) => s.commit(() => insert(s, i), { lazy: true })));
    expect(committed(file)).toBe(3);
    expect(f.calls).toHaveLength(0);
    expect(s.lazyPending).toBe(3);
    expect(await s.commit(() => count(s))).toBe(3);
    expect(f.calls).toHaveLength(0);
    s.close();
  });

  it('the next durable write makes them durable with it: one fsync, resolved after it', async () => {
    const { s, f } = open();
    await s.commit(() => insert(s, 1), { lazy: true });
    let done = false;
    const w = s.commit(() => insert(s, 2)).then(() => (done = true));
    await f.next();
    expect(f.calls).toHaveLength(1);
    expect(s.lazyPending).toBe(0);
    expect(done).toBe(false);
    f.calls[0]!(null);
    await w;
    expect(f.calls).toHaveLength(1);
    s.close();
  });

  it('a lazy write in a batch that holds durable writes waits for that batch fsync', async () => {
    const { s, f } = open();
    const order: string[] = [];
    const d = s.commit(() => insert(s, 1)).then(() => void order.push('durable'));
    const l = s.commit(() => insert(s, 2), { lazy: true }).then(() => void order.push('lazy'));
    await f.next();
    expect(order).toEqual([]);
    f.calls[0]!(null);
    await Promise.all([d, l]);
    expect(order).toEqual(['durable', 'lazy']);
    s.close();
  });

  it('lazy writes alone get an fsync of their own lazyFlushMs later', async () => {
    const { s, f } = open({ lazyFlushMs: 20 });
    const called = f.next();
    await s.commit(() => insert(s, 1), { lazy: true });
    expect(f.calls).toHaveLength(0);
    await called;
    expect(f.calls).toHaveLength(1);
    expect(s.lazyPending).toBe(0);
    f.calls[0]!(null);
    s.close();
  });

  it('settled() makes lazy writes durable', async () => {
    const { s, f } = open();
    await s.commit(() => insert(s, 1), { lazy: true });
    let settled = false;
    const p = s.settled().then(() => (settled = true));
    expect(f.calls).toHaveLength(1);
    await Promise.resolve();
    expect(settled).toBe(false);
    f.calls[0]!(null);
    await p;
    s.close();
  });

  it('a fn that clears opts.lazy (it wrote something that must be durable) waits for the fsync', async () => {
    const { s, f } = open();
    const mode = { lazy: true };
    let done = false;
    const w = s.commit(() => {
      insert(s, 1);
      mode.lazy = false;
    }, mode).then(() => (done = true));
    await f.next();
    expect(done).toBe(false);
    f.calls[0]!(null);
    await w;
    s.close();
  });

  it("sync 'commit' (the fsync inside COMMIT) treats a lazy commit as a durable one", async () => {
    const { s, file } = open({ sync: 'commit' });
    await s.commit(() => insert(s, 1), { lazy: true });
    expect(committed(file)).toBe(1);
    expect(s.lazyPending).toBe(0);
    s.close();
  });
});
