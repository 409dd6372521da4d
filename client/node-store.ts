/**
 * A ClientStore in one JSON file, for Node (CLI tools, bots, tests). Not exported by client/index.ts, so the
 * SDK stays free of Node imports.
 *
 * Every write rewrites the whole file synchronously (write to `<file>.<pid>.tmp`, fsync, rename over the file),
 * so when a write returns a crash of the process — kill -9 included — cannot lose it, and a crash during it
 * leaves the previous file: `handOut` (entries + cursor) is one such write, which is what makes "never the same
 * entry twice" hold across crashes. A crash mid-write leaves the temp file behind; opening the store removes
 * temp files of processes that no longer run. `markHandled` is deferred (to the next write, or 100 ms later):
 * losing it in a crash only makes those entries come back as `recovered`.
 *
 * One file is for one client at a time (two live processes on one file would overwrite each other's state).
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { ClientStore, PendingGroupFrame, PendingSend, StoredEntry, StoredState } from './store.js';
import type { MessageRef } from '../protocol/index.js';

interface FileShape {
  version: 1;
  cursor: number;
  /** Receipt version processed (absent in files of older SDKs). */
  receipts?: number;
  /** Read version processed (absent in files of older SDKs). */
  reads?: number;
  outbox: { id: string; to: string; body: string; createdAt: number; ref?: MessageRef }[];
  /** Handed-out entries whose listeners had not finished at the last write (absent in files of older SDKs). */
  unhandled?: { seq: number; kind: StoredEntry['kind']; msg: string; peer: string; ts: number; body: string; ref?: MessageRef }[];
  /** App values kept with the state (the chat CLI keeps its user and device here). */
  meta: Record<string, string>;
  /** Per group, the highest seq handed to the app. */
  groups?: Record<string, number>;
  /** Group changes and sends not yet answered (their binary frames, base64). */
  groupOutbox?: { id: string; frame: string }[];
}

export interface FileStoreOptions {
  /** fsync every write (default true). Off is faster and survives a process crash, not a power cut. */
  fsync?: boolean;
  /** How long a markHandled may wait for the next write before it is written by itself. Default 100 ms. */
  handledDelayMs?: number;
}

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
const unb64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

export class FileStore implements ClientStore {
  private cursor = 0;
  private receipts = 0;
  private reads = 0;
  private readonly outbox = new Map<string, PendingSend>();
  private readonly unhandled = new Map<number, StoredEntry>();
  private readonly meta: Record<string, string> = {};
  private readonly groups: Record<string, number> = {};
  private readonly groupOutbox = new Map<string, PendingGroupFrame>();
  private readonly fsync: boolean;
  private readonly handledDelayMs: number;
  private deferred: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly path: string,
    opts: FileStoreOptions = {},
  ) {
    this.fsync = opts.fsync ?? true;
    this.handledDelayMs = Math.max(0, opts.handledDelayMs ?? 100);
    removeStaleTemps(path);
    let raw: string | null = null;
    try {
      raw = readFileSync(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (raw !== null) {
      const f = JSON.parse(raw) as Partial<FileShape>;
      if (f.version !== 1) throw new Error(`${path}: not an Iris client store (version ${String(f.version)})`);
      this.cursor = typeof f.cursor === 'number' ? f.cursor : 0;
      this.receipts = typeof f.receipts === 'number' ? f.receipts : 0;
      this.reads = typeof f.reads === 'number' ? f.reads : 0;
      for (const p of f.outbox ?? []) this.outbox.set(p.id, { id: p.id, to: p.to, body: unb64(p.body), createdAt: p.createdAt, ...(p.ref && { ref: p.ref }) });
      for (const e of f.unhandled ?? []) this.unhandled.set(e.seq, { seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: unb64(e.body), ...(e.ref && { ref: e.ref }) });
      Object.assign(this.meta, f.meta ?? {});
      Object.assign(this.groups, f.groups ?? {});
      for (const p of f.groupOutbox ?? []) this.groupOutbox.set(p.id, { id: p.id, frame: unb64(p.frame) });
    }
  }

  load(): StoredState {
    return {
      cursor: this.cursor,
      receipts: this.receipts,
      reads: this.reads,
      // Only when there are any: a store of a client that never joined a group loads as it always did.
      ...(Object.keys(this.groups).length > 0 && { groups: { ...this.groups } }),
      ...(this.groupOutbox.size > 0 && { groupOutbox: [...this.groupOutbox.values()].map((p) => ({ id: p.id, frame: new Uint8Array(p.frame) })) }),
      outbox: [...this.outbox.values()].map((p) => ({ ...p, body: new Uint8Array(p.body) })),
      unhandled: [...this.unhandled.values()].sort((a, b) => a.seq - b.seq).map((e) => ({ ...e, body: new Uint8Array(e.body) })),
    };
  }

  handOut(entries: StoredEntry[], cursor: number): void {
    for (const e of entries) this.unhandled.set(e.seq, { ...e, body: new Uint8Array(e.body) });
    this.cursor = cursor;
    this.write();
  }

  markHandled(seqs: number[]): void {
    let changed = false;
    for (const s of seqs) changed = this.unhandled.delete(s) || changed;
    if (!changed || this.deferred) return;
    this.deferred = setTimeout(() => this.write(), this.handledDelayMs);
    // A pending deferred write must not keep a finished program alive; close() flushes it.
    (this.deferred as { unref?: () => void }).unref?.();
  }

  saveCursor(cursor: number): void {
    this.cursor = cursor;
    this.write();
  }

  /** Deferred like markHandled: a lost write only replays receipts (idempotent). */
  saveReceipts(version: number): void {
    if (this.receipts === version) return;
    this.receipts = version;
    this.deferWrite();
  }

  /** Deferred the same way: a lost write only replays read positions. */
  saveReads(version: number): void {
    if (this.reads === version) return;
    this.reads = version;
    this.deferWrite();
  }

  private deferWrite(): void {
    if (this.deferred) return;
    this.deferred = setTimeout(() => this.write(), this.handledDelayMs);
    (this.deferred as { unref?: () => void }).unref?.();
  }

  /** Written at once, like the cursor: a lost write would hand group entries to the app again. */
  saveGroupCursor(group: string, seq: number): void {
    if (this.groups[group] === seq) return;
    this.groups[group] = seq;
    this.write();
  }

  putGroupPending(item: PendingGroupFrame): void {
    this.groupOutbox.set(item.id, { id: item.id, frame: new Uint8Array(item.frame) });
    this.write();
  }

  deleteGroupPending(id: string): void {
    if (this.groupOutbox.delete(id)) this.write();
  }

  putPending(item: PendingSend): void {
    this.outbox.set(item.id, { ...item, body: new Uint8Array(item.body) });
    this.write();
  }

  deletePending(id: string): void {
    if (this.outbox.delete(id)) this.write();
  }

  flush(): void {
    if (this.deferred) this.write();
  }

  getMeta(key: string): string | undefined {
    return this.meta[key];
  }

  setMeta(key: string, value: string): void {
    if (this.meta[key] === value) return;
    this.meta[key] = value;
    this.write();
  }

  private write(): void {
    if (this.deferred) clearTimeout(this.deferred);
    this.deferred = null;
    const shape: FileShape = {
      version: 1,
      cursor: this.cursor,
      receipts: this.receipts,
      reads: this.reads,
      outbox: [...this.outbox.values()].map((p) => ({ id: p.id, to: p.to, body: b64(p.body), createdAt: p.createdAt, ...(p.ref && { ref: p.ref }) })),
      unhandled: [...this.unhandled.values()].map((e) => ({ seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: b64(e.body), ...(e.ref && { ref: e.ref }) })),
      meta: this.meta,
      groups: this.groups,
      groupOutbox: [...this.groupOutbox.values()].map((p) => ({ id: p.id, frame: b64(p.frame) })),
    };
    mkdirSync(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(shape));
      if (this.fsync) fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    if (this.fsync) fsyncDir(dirname(this.path));
  }
}

/** The rename itself is durable only once the directory is synced (a power cut could otherwise undo it). */
function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic for a process crash.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

/**
 * Deletes `<file>.<pid>.tmp` files left by processes that died mid-write. A temp file of a live process
 * other than this one is left alone (it may be writing right now).
 */
function removeStaleTemps(path: string): void {
  const dir = dirname(path);
  const prefix = `${basename(path)}.`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix) || !n.endsWith('.tmp')) continue;
    const pid = Number(n.slice(prefix.length, -'.tmp'.length));
    if (!Number.isInteger(pid) || pid <= 0) continue;
    if (pid !== process.pid && alive(pid)) continue;
    try {
      unlinkSync(join(dir, n));
    } catch {
      // Gone already.
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists, under another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
