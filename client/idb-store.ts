/**
 * A ClientStore in IndexedDB, for browsers: the default store wherever `indexedDB` exists. Every write the
 * client waits for is ONE readwrite transaction with durability 'strict' (the browser flushes it to disk
 * before reporting completion): `handOut` puts the entries and the cursor together, so a page reloaded, closed
 * or crashed at any moment either has both or neither. `markHandled` is deferred (to the next transaction, or
 * 100 ms later, or `flush()`, which the client calls when the page is hidden): losing it only brings those
 * entries back as `recovered`.
 *
 * Layout: database `name` (default `iris-client-<device>`), version 1 (or one up, see openVersion), object
 * stores `meta` (keys 'cursor', 'receipts' and 'reads'), `outbox` (key: client id; `ord` keeps the send order),
 * `unhandled` (key: seq) and `history` (key: the app's; see putHistory). A database made before `history`
 * existed is opened one version up, which adds it; later opens take whatever version it is at.
 */
import type { ClientStore, PendingGroupFrame, PendingSend, StoredEntry, StoredState } from './store.js';

// The slice of the IndexedDB API used here (the project compiles without the DOM library).
interface Req<T> {
  readonly result: T;
  readonly error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}
interface OpenReq extends Req<Db> {
  onupgradeneeded: (() => void) | null;
  onblocked: (() => void) | null;
}
interface ObjStore {
  put(value: unknown, key?: unknown): Req<unknown>;
  delete(key: unknown): Req<unknown>;
  get(key: unknown): Req<unknown>;
  getAll(): Req<unknown[]>;
}
interface Tx {
  objectStore(name: string): ObjStore;
  readonly error: unknown;
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}
interface Db {
  readonly objectStoreNames: { contains(name: string): boolean };
  createObjectStore(name: string): unknown;
  transaction(names: string[], mode: 'readonly' | 'readwrite', opts?: { durability?: 'strict' | 'relaxed' | 'default' }): Tx;
  close(): void;
}
export interface IdbFactoryLike {
  open(name: string, version?: number): OpenReq;
}

interface OutboxRow extends PendingSend {
  ord: number;
}

const STORES = ['meta', 'outbox', 'unhandled', 'history'];

/** A row of the app's history (putHistory / loadHistory). */
export interface HistoryRow<T = unknown> {
  key: string;
  value: T;
}

/** The global indexedDB, or null. */
export function globalIndexedDb(): IdbFactoryLike | null {
  const g = (globalThis as { indexedDB?: IdbFactoryLike }).indexedDB;
  return g && typeof g.open === 'function' ? g : null;
}

export interface IndexedDbStoreOptions {
  /** Database name; default `iris-client`. Use one per device (IrisClient's default store does). */
  name?: string;
  /** The IndexedDB factory; default the global `indexedDB`. */
  indexedDB?: IdbFactoryLike;
  /** How long a markHandled may wait for the next transaction. Default 100 ms. */
  handledDelayMs?: number;
}

export class IndexedDbStore implements ClientStore {
  readonly name: string;
  private readonly factory: IdbFactoryLike;
  private readonly handledDelayMs: number;
  private db: Promise<Db> | null = null;
  private ord = 0;
  /** Every group cursor, as last loaded or saved (the 'groups' record is written whole). */
  private groupCursors: Record<string, number> = {};
  /** Group changes and sends not yet answered, as last loaded or saved (the 'groupOutbox' record is written whole). */
  private groupPending: PendingGroupFrame[] = [];
  /** Handled marks not written yet. */
  private handled = new Set<number>();
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(opts: IndexedDbStoreOptions = {}) {
    const f = opts.indexedDB ?? globalIndexedDb();
    if (!f) throw new Error('IndexedDbStore: no indexedDB in this runtime');
    this.factory = f;
    this.name = opts.name ?? 'iris-client';
    this.handledDelayMs = Math.max(0, opts.handledDelayMs ?? 100);
  }

  private open(): Promise<Db> {
    this.db ??= this.openVersion();
    this.db.catch(() => {
      this.db = null;
    });
    return this.db;
  }

  /**
   * Opens the database (at whatever version it is: a new one is made at 1) and creates the object stores. A
   * database that exists without them (something else opened the name first, or an older SDK made it before
   * `history` existed) is opened again one version up, which lets the upgrade create them.
   */
  private openVersion(version?: number): Promise<Db> {
    return new Promise<Db>((resolve, reject) => {
      const r = version === undefined ? this.factory.open(this.name) : this.factory.open(this.name, version);
      r.onupgradeneeded = () => {
        for (const s of STORES) if (!r.result.objectStoreNames.contains(s)) r.result.createObjectStore(s);
      };
      r.onsuccess = () => {
        const db = r.result;
        if (STORES.every((s) => db.objectStoreNames.contains(s))) return resolve(db);
        const next = (db as unknown as { version?: number }).version ?? version ?? 1;
        db.close();
        this.openVersion(next + 1).then(resolve, reject);
      };
      r.onerror = () => reject(asError(r.error, 'open'));
      r.onblocked = () => reject(new Error(`IndexedDB ${this.name}: upgrade blocked by another open tab`));
    });
  }

  /** Runs `fill` in one readwrite transaction (with the deferred handled marks); resolves once it committed. */
  private async write(fill: (tx: Tx) => void): Promise<void> {
    const db = await this.open();
    const marks = [...this.handled];
    this.handled.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await new Promise<void>((resolve, reject) => {
      const tx = db.transaction(STORES, 'readwrite', { durability: 'strict' });
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(asError(tx.error, 'write'));
      tx.onabort = () => reject(asError(tx.error, 'write aborted'));
      const u = tx.objectStore('unhandled');
      for (const s of marks) u.delete(s);
      fill(tx);
    }).catch((e: unknown) => {
      // Not written: keep the marks for the next try.
      for (const s of marks) this.handled.add(s);
      throw e;
    });
  }

  async load(): Promise<StoredState> {
    const db = await this.open();
    const tx = db.transaction(STORES, 'readonly');
    const [cursor, receipts, reads, groups, groupOutbox, outbox, unhandled] = await Promise.all([
      req(tx.objectStore('meta').get('cursor')),
      req(tx.objectStore('meta').get('receipts')),
      req(tx.objectStore('meta').get('reads')),
      req(tx.objectStore('meta').get('groups')),
      req(tx.objectStore('meta').get('groupOutbox')),
      req(tx.objectStore('outbox').getAll()),
      req(tx.objectStore('unhandled').getAll()),
    ]);
    const rows = (outbox as OutboxRow[]).sort((a, b) => a.ord - b.ord);
    this.ord = Math.max(this.ord, rows.length > 0 ? rows[rows.length - 1]!.ord : 0);
    return {
      cursor: typeof cursor === 'number' ? cursor : 0,
      receipts: typeof receipts === 'number' ? receipts : 0,
      reads: typeof reads === 'number' ? reads : 0,
      groups: (this.groupCursors = { ...(typeof groups === 'object' && groups !== null ? (groups as Record<string, number>) : {}), ...this.groupCursors }),
      groupOutbox: (this.groupPending = [...(Array.isArray(groupOutbox) ? (groupOutbox as PendingGroupFrame[]) : []), ...this.groupPending.filter((p) => !(groupOutbox as PendingGroupFrame[] | undefined)?.some((q) => q.id === p.id))]).map((p) => ({ id: p.id, frame: p.frame.slice() })),
      outbox: rows.map((r) => ({ id: r.id, to: r.to, body: r.body, createdAt: r.createdAt, ...(r.ref && { ref: r.ref }) })),
      unhandled: (unhandled as StoredEntry[]).filter((e) => !this.handled.has(e.seq)).sort((a, b) => a.seq - b.seq),
    };
  }

  handOut(entries: StoredEntry[], cursor: number): Promise<void> {
    return this.write((tx) => {
      const u = tx.objectStore('unhandled');
      for (const e of entries) u.put({ ...e, body: e.body.slice() }, e.seq);
      tx.objectStore('meta').put(cursor, 'cursor');
    });
  }

  markHandled(seqs: number[]): void {
    for (const s of seqs) this.handled.add(s);
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush().catch(() => {});
    }, this.handledDelayMs);
  }

  saveCursor(cursor: number): Promise<void> {
    return this.write((tx) => tx.objectStore('meta').put(cursor, 'cursor'));
  }

  saveReceipts(version: number): Promise<void> {
    return this.write((tx) => tx.objectStore('meta').put(version, 'receipts'));
  }

  saveReads(version: number): Promise<void> {
    return this.write((tx) => tx.objectStore('meta').put(version, 'reads'));
  }

  /** Group changes and sends not yet answered: one record (meta 'groupOutbox'), rewritten whole (they are few). */
  putGroupPending(item: PendingGroupFrame): Promise<void> {
    this.groupPending = [...this.groupPending.filter((p) => p.id !== item.id), { id: item.id, frame: item.frame.slice() }];
    const all = this.groupPending;
    return this.write((tx) => tx.objectStore('meta').put(all, 'groupOutbox'));
  }

  deleteGroupPending(id: string): Promise<void> {
    this.groupPending = this.groupPending.filter((p) => p.id !== id);
    const all = this.groupPending;
    return this.write((tx) => tx.objectStore('meta').put(all, 'groupOutbox'));
  }

  /** Group cursors: one record (meta 'groups'), rewritten whole; a user is in a bounded number of groups. */
  saveGroupCursor(group: string, seq: number): Promise<void> {
    this.groupCursors[group] = seq;
    const all = { ...this.groupCursors };
    return this.write((tx) => tx.objectStore('meta').put(all, 'groups'));
  }

  putPending(item: PendingSend): Promise<void> {
    // Time-based, so a send made before load() (or by a later page) still sorts after every stored one.
    this.ord = Math.max(this.ord + 1, Date.now() * 1000);
    const row: OutboxRow = { ...item, body: item.body.slice(), ord: this.ord };
    return this.write((tx) => tx.objectStore('outbox').put(row, item.id));
  }

  deletePending(id: string): Promise<void> {
    return this.write((tx) => tx.objectStore('outbox').delete(id));
  }

  flush(): Promise<void> {
    if (this.handled.size === 0) return Promise.resolve();
    return this.write(() => {});
  }

  /**
   * The app's history, kept next to the SDK's own state so that one database holds all a page needs after a
   * reload: rows the app names and shapes (the web chat keeps one per conversation), each `value` anything
   * IndexedDB can clone. Every put is one readwrite transaction with durability 'strict', and IndexedDB runs
   * transactions on the same stores in the order they were created, which gives the app two orderings:
   * - a put made inside a `message` / `groupMessage` listener commits before the SDK's write that forgets the
   *   entry (markHandled) or saves the group's cursor: after a reload the message is in the history or comes
   *   again (`recovered`, or redelivered), never neither;
   * - a put made before `send()` / `sendToGroup()` commits before the send's outbox row: a send the outbox
   *   kept is always in the history. The app sends what its history still shows as unsent again with the same
   *   id after a reload (the server's idempotency key), so one that never reached the outbox still goes, once.
   */
  putHistory(key: string, value: unknown): Promise<void> {
    const row: HistoryRow = { key, value };
    return this.write((tx) => tx.objectStore('history').put(row, key));
  }

  deleteHistory(key: string): Promise<void> {
    return this.write((tx) => tx.objectStore('history').delete(key));
  }

  /** Every history row, in key order. */
  async loadHistory<T = unknown>(): Promise<HistoryRow<T>[]> {
    const db = await this.open();
    return (await req(db.transaction(['history'], 'readonly').objectStore('history').getAll())) as HistoryRow<T>[];
  }

  /** Closes the database connection (after pending writes). */
  async close(): Promise<void> {
    await this.flush();
    const db = this.db;
    this.db = null;
    if (db) (await db).close();
  }
}

function req<T>(r: Req<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(asError(r.error, 'read'));
  });
}

function asError(e: unknown, what: string): Error {
  return e instanceof Error ? e : new Error(`IndexedDB ${what} failed${e ? `: ${String(e)}` : ''}`);
}
