import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { onpremConfig, resolveSettings, settingName, StartupError } from '../../onprem/config.js';
import { DEV_SECRET } from '../../auth/index.js';
import { ConnectLimiter } from '../../onprem/http.js';
import { ownerOf, userHash } from '../../onprem/owner.js';
import { Dec, decodeForward, encodeForward } from '../../onprem/links.js';
import { StorageFullError } from '../../core/ports.js';
import { LogLimiter, describeError, formatArgs } from '../../onprem/log.js';
import { GroupCommitStorage } from '../../onprem/storage.js';
import { workerExecArgv } from '../../onprem/supervisor.js';
import { IdleTrim } from '../../onprem/memory.js';
import { getHeapSpaceStatistics } from 'node:v8';
import { removeDir, sleep, tempDir } from './helpers.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});
function dir(): string {
  const d = tempDir('iris-onprem-unit-');
  dirs.push(d);
  return d;
}

const body = new Uint8Array([1, 2, 3]);
function insert(s: GroupCommitStorage, user: string, seq: number): void {
  s.sql.all(`INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES (?, ?, 1, 'm', 'p', 0, ?)`, user, seq, body);
}
/** Rows another connection can see: what is committed. */
function committed(file: string, user: string): number {
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    return (db.prepare(`SELECT count(*) AS c FROM inbox WHERE user = ?`).get(user) as { c: number }).c;
  } finally {
    db.close();
  }
}

describe('group commit storage', () => {
  it('resolves a batch only after its COMMIT, with one COMMIT for the batch', async () => {
    const file = join(dir(), 'w.sqlite');
    const batches: number[] = [];
    const s = new GroupCommitStorage(file, { windowMs: 100, maxBatch: 1000, observer: { committed: (fns) => void batches.push(fns) } });
    let resolved = 0;
    const ps = [1, 2, 3].map((i) => s.commit(() => insert(s, 'u', i)).then(() => void resolved++));
    // Inside the window: written in the open transaction, invisible to anyone else, nobody resolved.
    await sleep(20);
    expect(resolved).toBe(0);
    expect(committed(file, 'u')).toBe(0);
    await Promise.all(ps);
    expect(resolved).toBe(3);
    expect(committed(file, 'u')).toBe(3);
    expect(batches).toEqual([3]);
    s.close();
  });

  it('rolls back only the writes of a function that throws', async () => {
    const file = join(dir(), 'w.sqlite');
    const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000 });
    const a = s.commit(() => insert(s, 'u', 1));
    const b = s.commit(() => {
      insert(s, 'u', 2);
      throw new Error('boom');
    });
    const c = s.commit(() => insert(s, 'u', 3));
    await expect(b).rejects.toThrow('boom');
    await Promise.all([a, c]);
    expect(s.sql.all<{ seq: number }>(`SELECT seq FROM inbox WHERE user = 'u' ORDER BY seq`).map((r) => r.seq)).toEqual([1, 3]);
    s.close();
  });

  it('answers reads at once when nothing is uncommitted, and after the commit when something is', async () => {
    const file = join(dir(), 'w.sqlite');
    let commits = 0;
    const s = new GroupCommitStorage(file, { windowMs: 200, maxBatch: 1000, observer: { committed: () => void commits++ } });
    const t0 = Date.now();
    expect(await s.commit(() => s.sql.all(`SELECT count(*) AS c FROM inbox`)[0])).toEqual({ c: 0 });
    expect(Date.now() - t0).toBeLessThan(100);
    expect(commits).toBe(0);
    // A write is pending: a read in the same transaction may have seen it, so it waits for the same commit.
    const w = s.commit(() => insert(s, 'u', 1));
    let readDone = false;
    const r = s.commit(() => s.sql.all(`SELECT count(*) AS c FROM inbox`)[0]).then((x) => {
      readDone = true;
      return x;
    });
    await sleep(50);
    expect(readDone).toBe(false);
    await w;
    expect(await r).toEqual({ c: 1 });
    expect(commits).toBe(1);
    s.close();
  });

  it('commits as soon as the batch is full, and writes outside commit() join the batch', async () => {
    const file = join(dir(), 'w.sqlite');
    const batches: number[] = [];
    const s = new GroupCommitStorage(file, { windowMs: 10_000, maxBatch: 3, observer: { committed: (fns) => void batches.push(fns) } });
    s.sql.all(`INSERT INTO users (user, next_seq, next_n, trimmed, delivered, last_seen) VALUES ('x', 1, 1, 0, 0, 0)`);
    const t0 = Date.now();
    await Promise.all([1, 2, 3].map((i) => s.commit(() => insert(s, 'u', i))));
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(batches).toEqual([3]);
    expect(committed(file, 'u')).toBe(3);
    const db = new DatabaseSync(file, { readOnly: true });
    expect(db.prepare(`SELECT count(*) AS c FROM users WHERE user = 'x'`).get()).toEqual({ c: 1 });
    db.close();
    s.close();
  });

  it('keeps committed data across a reopen, and migrations are idempotent', async () => {
    const file = join(dir(), 'w.sqlite');
    let s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 10 });
    await s.commit(() => insert(s, 'u', 1));
    s.close();
    s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 10 });
    expect(s.sql.all(`SELECT seq FROM inbox`)).toEqual([{ seq: 1 }]);
    expect(s.sql.all<{ journal_mode: string }>(`PRAGMA journal_mode`)[0]!.journal_mode).toBe('wal');
    expect(s.sql.all<{ synchronous: number }>(`PRAGMA synchronous`)[0]!.synchronous).toBe(2); // FULL: fsync in COMMIT
    s.close();
    await expect(s.commit(() => 1)).rejects.toThrow('closed');
    // 'async': SQLite does not fsync at COMMIT; the storage fsyncs the WAL itself before resolving (next tests).
    const a = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 10, sync: 'async' });
    expect(a.sql.all<{ synchronous: number }>(`PRAGMA synchronous`)[0]!.synchronous).toBe(1);
    expect(a.sql.all(`SELECT seq FROM inbox`)).toEqual([{ seq: 1 }]);
    a.close();
  });
});

describe("group commit storage: the WAL fsync off the event loop (sync 'async')", () => {
  /** An fsync the test completes by hand. */
  function heldFsync() {
    const calls: ((err: Error | null) => void)[] = [];
    return { calls, fsync: (_fd: number, done: (err: Error | null) => void) => void calls.push(done) };
  }

  it('resolves a group only after its fsync; what commits meanwhile waits for the next fsync', async () => {
    const file = join(dir(), 'w.sqlite');
    const f = heldFsync();
    const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000, sync: 'async', fsync: f.fsync });
    const done: number[] = [];
    const a = s.commit(() => insert(s, 'u', 1)).then(() => void done.push(1));
    await sleep(10);
    // Committed (visible to another connection), not yet durable: not resolved.
    expect(committed(file, 'u')).toBe(1);
    expect(f.calls).toHaveLength(1);
    expect(done).toEqual([]);
    // Arrives while that fsync runs: the next group, left open (no COMMIT per turn) until that fsync ends.
    const b = s.commit(() => insert(s, 'u', 2)).then(() => void done.push(2));
    const c = s.commit(() => insert(s, 'u', 3)).then(() => void done.push(3));
    await sleep(10);
    expect(committed(file, 'u')).toBe(1);
    expect(f.calls).toHaveLength(1);
    f.calls[0]!(null);
    await a;
    expect(done).toEqual([1]);
    await sleep(10);
    // Then one COMMIT and one fsync for both.
    expect(committed(file, 'u')).toBe(3);
    expect(f.calls).toHaveLength(2);
    f.calls[1]!(null);
    await Promise.all([b, c]);
    expect(done).toEqual([1, 2, 3]);
    s.close();
  });

  it('a read of data whose fsync has not finished waits for it', async () => {
    const file = join(dir(), 'w.sqlite');
    const f = heldFsync();
    const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000, sync: 'async', fsync: f.fsync });
    void s.commit(() => insert(s, 'u', 1));
    await sleep(10);
    let read: unknown = null;
    const r = s.commit(() => s.sql.all(`SELECT count(*) AS c FROM inbox`)[0]).then((x) => (read = x));
    await sleep(10);
    expect(read).toBeNull();
    f.calls[0]!(null);
    await r;
    expect(read).toEqual({ c: 1 });
    // Nothing waiting for an fsync now: a read resolves at once, without one.
    expect(await s.commit(() => s.sql.all(`SELECT count(*) AS c FROM inbox`)[0])).toEqual({ c: 1 });
    expect(f.calls).toHaveLength(1);
    s.close();
  });

  it('a failed fsync rejects every waiter and is fatal', async () => {
    const file = join(dir(), 'w.sqlite');
    const f = heldFsync();
    const fatal: unknown[] = [];
    const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000, sync: 'async', fsync: f.fsync, onFatal: (e) => void fatal.push(e) });
    const a = s.commit(() => insert(s, 'u', 1));
    await sleep(10);
    const b = s.commit(() => insert(s, 'u', 2));
    await sleep(10);
    const eio = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
    f.calls[0]!(eio);
    await expect(a).rejects.toThrow('EIO');
    await expect(b).rejects.toThrow('EIO');
    expect(fatal).toEqual([eio]);
    await expect(s.commit(() => insert(s, 'u', 3))).rejects.toThrow('closed');
  });
});

describe('ownership hash', () => {
  it('is stable (FNV-1a 32) and spreads users evenly', () => {
    expect(userHash('')).toBe(0x811c9dc5);
    expect(userHash('a')).toBe(0xe40c292c);
    expect(userHash('foobar')).toBe(0xbf9cf968);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 40_000; i++) counts[ownerOf(`user${i}`, 4)]!++;
    for (const c of counts) expect(Math.abs(c - 10_000)).toBeLessThan(600);
  });
});

describe('peer wire', () => {
  it('round-trips a forward batch', () => {
    const batch = {
      from: 'alice',
      items: [
        { n: 1, kind: 'message' as const, msg: 'alice:1', ts: 1_700_000_000_123, body: new Uint8Array([0, 255, 7]) },
        { n: 2 ** 40, kind: 'delivered' as const, msg: 'bob:9', ts: 5, body: new Uint8Array(0) },
      ],
    };
    const buf = encodeForward(77, 'bob', batch);
    expect(buf.readUInt32LE(0)).toBe(buf.length - 4);
    const d = new Dec(buf.subarray(4));
    expect(d.u8()).toBe(1);
    expect(d.u32()).toBe(77);
    expect(decodeForward(d)).toEqual({ to: 'bob', batch });
    // With the receipt the sender owes the recipient (ForwardBatch.receipt), a receipt alone, and the read
    // receipt (ForwardBatch.read) with or without a delivery receipt.
    for (const b of [
      { ...batch, receipt: { n: 2 ** 41, msg: 'bob:12', ts: 9 } },
      { from: 'alice', items: [], receipt: { n: 3, msg: 'bob:3', ts: 1 } },
      { from: 'alice', items: [], read: { n: 4, msg: 'bob:4', ts: 2 } },
      { ...batch, receipt: { n: 5, msg: 'bob:5', ts: 3 }, read: { n: 2 ** 42, msg: 'bob:6', ts: 4 } },
    ]) {
      const d2 = new Dec(encodeForward(1, 'bob', b).subarray(4));
      d2.u8();
      d2.u32();
      expect(decodeForward(d2)).toEqual({ to: 'bob', batch: b });
    }
  });
});

describe('settings', () => {
  it('maps names and merges defaults < file < environment < flags', () => {
    expect(settingName('data-dir')).toBe('IRIS_DATA_DIR');
    expect(settingName('inboxCap')).toBe('IRIS_INBOX_CAP');
    expect(settingName('IRIS_PORT')).toBe('IRIS_PORT');
    const d = dir();
    const file = join(d, 'iris.json');
    writeFileSync(file, JSON.stringify({ port: 9000, 'data-dir': 'rel', IRIS_INBOX_CAP: 7, IRIS_WORKERS: 3 }));
    const { settings } = resolveSettings(['--config', file, '--workers', '4'], { IRIS_PORT: '9001', IRIS_RATE_BURST: '9', IRIS_DEV_MODE: '1' }, '/somewhere');
    const cfg = onpremConfig(settings);
    expect(cfg.port).toBe(9001); // env over file
    expect(cfg.workers).toBe(4); // flag over file
    expect(cfg.dataDir).toBe(join(d, 'rel')); // relative to the config file
    expect(cfg.runDir).toBe(join(d, 'rel', 'run'));
    expect(cfg.engine.inboxCap).toBe(7);
    expect(cfg.engine.rateBurst).toBe(9);
    expect(cfg.host).toBe('127.0.0.1');
    expect(cfg.devAuth).toBe(true);
    expect(() => resolveSettings(['--bogus', '1'], {}, '/')).toThrow(StartupError);
    expect(() => onpremConfig({ IRIS_PORT: 'x', IRIS_JWT_SECRET: 's' })).toThrow('IRIS_PORT must be an integer');
    expect(onpremConfig({ IRIS_JWT_SECRET: 's' }).devAuth).toBe(false);
    expect(onpremConfig({ IRIS_JWT_SECRET: 's' }).walSync).toBe('commit');
    expect(onpremConfig({ IRIS_JWT_SECRET: 's', IRIS_WAL_SYNC: 'async' }).walSync).toBe('async');
    expect(() => onpremConfig({ IRIS_JWT_SECRET: 's', IRIS_WAL_SYNC: 'later' })).toThrow('IRIS_WAL_SYNC must be commit or async');
    expect(onpremConfig({ IRIS_TLS_CERT: '/c', IRIS_TLS_KEY: '/k', IRIS_JWT_SECRET: 's' }).route).toBe('pipe');
  });

  it('refuses at start-up what the Cloudflare edge answers 503 misconfigured for (core/settings.ts)', () => {
    const key = { IRIS_JWT_SECRET: 's' };
    expect(() => onpremConfig({ ...key, IRIS_INBOX_CAP: '1.5' })).toThrow('IRIS_INBOX_CAP must be an integer ≥ 1, got "1.5"');
    expect(() => onpremConfig({ ...key, IRIS_JWT_CLOCK_TOLERANCE: 'soon' })).toThrow('IRIS_JWT_CLOCK_TOLERANCE must be a number from 0 to 3600, got "soon"');
    expect(() => onpremConfig({ ...key, IRIS_JWKS: '{"keys":' })).toThrow(/^IRIS_JWKS is not valid JSON/);
    expect(() => onpremConfig({ ...key, IRIS_JWKS: '{"kty":"RSA"}' })).toThrow('IRIS_JWKS must be a JSON object with a "keys" array');
    expect(() => onpremConfig({ ...key, IRIS_JWKS_URL: 'keys.example/jwks.json' })).toThrow('IRIS_JWKS_URL must be an http(s) URL');
    expect(() => onpremConfig({ ...key, IRIS_RATE_PER_SEC: '0' })).toThrow('IRIS_RATE_PER_SEC must be a number > 0');
    // Fractional rates are fine; caps and counts are integers.
    expect(onpremConfig({ ...key, IRIS_RATE_PER_SEC: '0.5' }).engine.ratePerSec).toBe(0.5);
    expect(onpremConfig({ ...key, IRIS_JWT_CLOCK_TOLERANCE: '0' }).auth.clockToleranceSec).toBe(0);
  });

  it('accepts the development secret only when asked for and no key is configured', () => {
    // Not in development mode unless asked: no key and no IRIS_DEV_MODE is a start-up error, not the dev secret.
    expect(() => onpremConfig({})).toThrow('no JWT key configured');
    expect(() => onpremConfig({ IRIS_DEV_MODE: '0' })).toThrow('no JWT key configured');
    expect(() => onpremConfig({ IRIS_DEV_MODE: 'yes' })).toThrow('IRIS_DEV_MODE must be 0, 1, true or false');
    const dev = onpremConfig({ IRIS_DEV_MODE: '1' });
    expect([dev.devAuth, dev.auth.secret, dev.devModeIgnored]).toEqual([true, DEV_SECRET, false]);
    // Any key switches the development secret off, and the ignored dev mode is reported.
    const keyed: Record<string, string>[] = [{ IRIS_JWT_SECRET: 's' }, { IRIS_JWKS: '{"keys":[]}' }, { IRIS_JWKS_URL: 'https://keys.example/jwks.json' }];
    for (const key of keyed) {
      for (const dev of ['0', '1']) {
        const c = onpremConfig({ ...key, IRIS_DEV_MODE: dev });
        expect(c.devAuth, JSON.stringify(key)).toBe(false);
        expect(c.auth.secret === DEV_SECRET, JSON.stringify(key)).toBe(false);
        expect(c.devModeIgnored).toBe(dev === '1');
      }
    }
  });

  it("caps the workers' young generation (IRIS_SEMI_SPACE_MB), over inherited flags", () => {
    expect(onpremConfig({ IRIS_JWT_SECRET: 's' }).semiSpaceMb).toBe(16);
    expect(onpremConfig({ IRIS_SEMI_SPACE_MB: '0', IRIS_JWT_SECRET: 's' }).semiSpaceMb).toBe(0);
    expect(() => onpremConfig({ IRIS_SEMI_SPACE_MB: '-1', IRIS_JWT_SECRET: 's' })).toThrow('IRIS_SEMI_SPACE_MB must be an integer');
    // V8 takes the last occurrence: ours comes after whatever the supervisor was started with.
    expect(workerExecArgv(16, ['--max-semi-space-size=64'])).toEqual(['--max-semi-space-size=64', '--max-semi-space-size=16']);
    expect(workerExecArgv(0, ['--enable-source-maps'])).toEqual(['--enable-source-maps']);
  });

  it('hands a grown young generation back with one memory-reducing GC (IRIS_IDLE_GC_MS)', () => {
    expect(onpremConfig({ IRIS_JWT_SECRET: 's' }).idleGcMs).toBe(5000);
    expect(onpremConfig({ IRIS_IDLE_GC_MS: '0', IRIS_JWT_SECRET: 's' }).idleGcMs).toBe(0);
    const young = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')!.space_size;
    // A burst in which everything survives: what makes V8 grow the young generation.
    const keep: { i: number; s: string }[] = [];
    for (let i = 0; i < 300_000; i++) keep.push({ i, s: `x${i}` });
    const grown = young();
    const r = new IdleTrim(1000).trim();
    expect(r).not.toBeNull();
    if (grown > 4 * 1024 * 1024) expect(young()).toBeLessThan(grown);
    expect(keep.length).toBe(300_000);
    // Off: no timer, no GC.
    new IdleTrim(0).start().stop();
  });

  it('limits connection attempts per address, per worker share', () => {
    const l = new ConnectLimiter(6, 2); // 3 per minute on this worker
    expect([1, 2, 3].map(() => l.take('1.2.3.4', 0))).toEqual([0, 0, 0]);
    expect(l.take('1.2.3.4', 0)).toBeGreaterThan(0);
    expect(l.take('5.6.7.8', 0)).toBe(0);
    expect(l.take('1.2.3.4', 20_000)).toBe(0); // one token back after a third of a minute
  });
});

describe('group commit when the database is full (SQLITE_FULL via max_page_count)', () => {
  it('refuses writes with StorageFullError, keeps reads, probes, and recovers', async () => {
    const file = join(dir(), 'full.sqlite');
    const changes: boolean[] = [];
    const s = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1000, fullRetryMs: 50, observer: { committed: () => undefined, full: (f) => void changes.push(f) } });
    try {
      await s.commit(() => insert(s, 'u', 1));
      const pages = (s.db.prepare('PRAGMA page_count').get() as { page_count: number }).page_count;
      s.db.exec(`PRAGMA max_page_count = ${pages}`);
      const big = new Uint8Array(64 * 1024);
      const write = (seq: number) => () => s.sql.all(`INSERT INTO inbox (user, seq, kind, msg, peer, ts, body) VALUES ('u', ?, 1, 'm', 'p', 0, ?)`, seq, big);
      const e1 = await s.commit(write(2)).then(() => null, (e: unknown) => e);
      expect(e1).toBeInstanceOf(StorageFullError);
      expect((e1 as StorageFullError).retryAfterMs).toBeGreaterThan(0);
      expect(s.full).toBe(true);
      // Refused up front now (no statement runs into the limit), reads still work.
      await expect(s.commit(write(3))).rejects.toBeInstanceOf(StorageFullError);
      await expect(s.commit(() => s.sql.all(`SELECT count(*) AS c FROM inbox`)[0])).resolves.toEqual({ c: 1 });
      expect(changes).toEqual([true]);
      // Space again: after the probe interval a write goes through and ends the state.
      s.db.exec('PRAGMA max_page_count = 1073741823');
      await sleep(60);
      await s.commit(write(4));
      expect(s.full).toBe(false);
      expect(changes).toEqual([true, false]);
    } finally {
      s.close();
    }
  });
});

describe('one line per log entry', () => {
  it('describes errors with their cause chain on one line and rate-limits', () => {
    const e = new Error('outer\nsecond line', { cause: Object.assign(new Error('inner'), { code: 'ENOSPC' }) });
    expect(describeError(e)).toBe('Error: outer | second line <- cause: Error: inner (ENOSPC)');
    expect(formatArgs(['iris: forward failed:', e])).not.toMatch(/\n/);
    let t = 0;
    const l = new LogLimiter(2, 1, () => t);
    expect([l.take(), l.take(), l.take(), l.take()]).toEqual([0, 0, null, null]);
    t = 1000;
    expect(l.take()).toBe(2); // allowed again, and says how many were left out
  });
});
