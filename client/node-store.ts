/**
 * A ClientStore in one JSON file, for Node (CLI tools, bots, tests). Not exported by client/index.ts, so the
 * SDK stays free of Node imports.
 *
 * Every change rewrites the file synchronously (write to a temp file, fsync, rename), so when a save
 * returns, a crash of the process — kill -9 included — cannot lose it or leave a torn file.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { ClientStore, PendingSend, StoredState } from './store.js';

interface FileShape {
  version: 1;
  cursor: number;
  outbox: { id: string; to: string; body: string; createdAt: number }[];
  /** App values kept with the state (the chat CLI keeps its user and device here). */
  meta: Record<string, string>;
}

export interface FileStoreOptions {
  /** fsync every write (default true). Off is faster and survives a process crash, not a power cut. */
  fsync?: boolean;
}

export class FileStore implements ClientStore {
  private cursor = 0;
  private readonly outbox = new Map<string, PendingSend>();
  private readonly meta: Record<string, string> = {};
  private readonly fsync: boolean;

  constructor(
    readonly path: string,
    opts: FileStoreOptions = {},
  ) {
    this.fsync = opts.fsync ?? true;
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
      for (const p of f.outbox ?? []) {
        this.outbox.set(p.id, { id: p.id, to: p.to, body: Buffer.from(p.body, 'base64'), createdAt: p.createdAt });
      }
      Object.assign(this.meta, f.meta ?? {});
    }
  }

  load(): StoredState {
    return { cursor: this.cursor, outbox: [...this.outbox.values()].map((p) => ({ ...p, body: new Uint8Array(p.body) })) };
  }

  saveCursor(cursor: number): void {
    this.cursor = cursor;
    this.flush();
  }

  putPending(item: PendingSend): void {
    this.outbox.set(item.id, { ...item, body: new Uint8Array(item.body) });
    this.flush();
  }

  deletePending(id: string): void {
    if (this.outbox.delete(id)) this.flush();
  }

  getMeta(key: string): string | undefined {
    return this.meta[key];
  }

  setMeta(key: string, value: string): void {
    if (this.meta[key] === value) return;
    this.meta[key] = value;
    this.flush();
  }

  private flush(): void {
    const shape: FileShape = {
      version: 1,
      cursor: this.cursor,
      outbox: [...this.outbox.values()].map((p) => ({
        id: p.id,
        to: p.to,
        body: Buffer.from(p.body.buffer, p.body.byteOffset, p.body.byteLength).toString('base64'),
        createdAt: p.createdAt,
      })),
      meta: this.meta,
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
  }
}
