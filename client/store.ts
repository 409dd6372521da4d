import type { MessageRef } from '../protocol/index.js';

/**
 * Where a client keeps what must survive a restart of the app: the delivery cursor, the entries it has handed
 * (or is about to hand) to the app whose handler has not finished yet, and the outbox (sends not yet
 * acknowledged by the server).
 *
 * What the client promises the app, given a store:
 * - **At most once, ever.** An entry is recorded as *handed out* — together with the new cursor, in ONE
 *   atomic write (`handOut`) — before any `message` / `receipt` listener sees it and before it is acked to the
 *   server. The cursor never moves back, so no later client with the same store emits it as a `message` or
 *   `receipt` again, whatever point a crash (kill -9 included) hits.
 * - **Nothing lost.** An entry is acked to the server only after `handOut` returned, so it is either still on
 *   the server (and comes again, once) or in the store. When its listeners finished, the client calls
 *   `markHandled`. Entries handed out whose listeners never finished (the process died, or the machine did)
 *   are kept, and the next client with the same store gives them to `recovered` listeners before anything
 *   new. A recovered entry may have been fully or partly processed: the app decides (typically by looking
 *   up the server message id `msg` in its own data). `recovered` is at-least-once: a crash inside a
 *   `recovered` listener brings the entry back again next time.
 * - **Bounded.** Handled entries are forgotten; what remains is at most the entries of the deliver frames
 *   being processed when the process stopped.
 *
 * How far these hold depends on the store: `MemoryStore` (the default outside browsers) only within one
 * process (successive clients sharing the object); `FileStore` (Node, client/node-store.ts) across process
 * crashes and, with fsync (the default), power loss; `IndexedDbStore` (client/idb-store.ts, the default where
 * `indexedDB` exists) across page reloads and browser restarts, as far as the browser keeps the origin's data.
 *
 * Methods may be synchronous (in-memory, Node file store) or return promises (IndexedDB, a database). The
 * client calls them in order and never overlaps two calls. A write that fails must leave the previous state.
 */
export interface PendingSend {
  /** Client message id: the idempotency key, reused for every resend. */
  id: string;
  to: string;
  body: Uint8Array;
  /** What the message refers to (reply, edit, delete, react; PROTOCOL.md 9.9), resent with it. */
  ref?: MessageRef;
  /** ms since epoch when the app called send(). */
  createdAt: number;
}

/** A delivered inbox entry as the store keeps it (the wire Entry). */
export interface StoredEntry {
  seq: number;
  kind: 'message' | 'delivered' | 'sent';
  /** Server message id. */
  msg: string;
  /** Sender of a message; recipient of a receipt or of a message this user sent (`sent`). */
  peer: string;
  ts: number;
  body: Uint8Array;
  /** What the message refers to, as delivered (PROTOCOL.md 9.9). */
  ref?: MessageRef;
}

/** A group change or send not yet answered (PROTOCOL.md 9.9): the encoded frame, resent as it is. */
export interface PendingGroupFrame {
  id: string;
  /** The frame in the binary encoding. */
  frame: Uint8Array;
}

export interface StoredState {
  /** Highest sequence number handed out (or skipped on the server's word): never handed out again. */
  cursor: number;
  /** Oldest first: the order they are resent in. */
  outbox: PendingSend[];
  /** Entries handed out whose listeners did not finish, by sequence number. */
  unhandled: StoredEntry[];
  /** The receipt version processed (the `upTo` of the last `receipts` frame; PROTOCOL.md 9.6). 0 or absent: none. */
  receipts?: number;
  /** The read version processed (the `upTo` of the last `read_state` frame; PROTOCOL.md 9.8). 0 or absent: none. */
  reads?: number;
  /** Per group, the highest seq handed to the app (PROTOCOL.md 9.9): entries at or below it are dropped. */
  groups?: Record<string, number>;
  /** Group changes and sends not yet answered, oldest first. */
  groupOutbox?: PendingGroupFrame[];
}

export interface ClientStore {
  load(): StoredState | Promise<StoredState>;
  /**
   * ONE atomic write: records `entries` as handed out and sets the cursor to `cursor` (>= every entry's seq).
   * Called before the app sees any of them and before they are acked.
   */
  handOut(entries: StoredEntry[], cursor: number): void | Promise<void>;
  /**
   * The listeners of these entries finished: forget them. A store may defer this write (to its next write,
   * or a short timer): losing it in a crash only brings the entries back as `recovered`, never as `message`.
   */
  markHandled(seqs: number[]): void | Promise<void>;
  /** Moves the cursor without handing anything out (the server says it is elsewhere). */
  saveCursor(cursor: number): void | Promise<void>;
  /**
   * Records the receipt version, after the `receipt` listeners of its frame ran. Optional: a store without it
   * gets every receipt state again when the app restarts (receipts are idempotent, so only the cost differs).
   * May be deferred like markHandled: losing it replays receipts, it never loses one.
   */
  saveReceipts?(version: number): void | Promise<void>;
  /**
   * Records the read version, after the `readState` listeners of its frame ran. Optional and deferrable like
   * saveReceipts: without it a restarted app gets every read position again (idempotent state).
   */
  saveReads?(version: number): void | Promise<void>;
  /**
   * Records how far the app processed a group (after its listeners ran). Optional: a store without it forgets
   * group cursors on restart, and the app may see entries again that the server had not recorded as acked.
   */
  saveGroupCursor?(group: string, seq: number): void | Promise<void>;
  /**
   * A group change or send, before it is first written (optional: without it, they are kept in memory only and a
   * restarted client does not resend them); deleted once answered.
   */
  putGroupPending?(item: PendingGroupFrame): void | Promise<void>;
  deleteGroupPending?(id: string): void | Promise<void>;
  /** Called before a send is first written to the socket. */
  putPending(item: PendingSend): void | Promise<void>;
  /** Called when the server acknowledged the send (or refused it for good). */
  deletePending(id: string): void | Promise<void>;
  /** Writes whatever was deferred (markHandled). Called by IrisClient.close() and when a page is hidden. */
  flush?(): void | Promise<void>;
}

function copyEntry(e: StoredEntry): StoredEntry {
  return { ...e, body: e.body.slice() };
}

/**
 * The default store outside browsers: survives reconnects of one client object, not a restart of the process.
 * Sharing one MemoryStore between two successive clients simulates a persistent store (tests do this).
 */
export class MemoryStore implements ClientStore {
  cursor = 0;
  receipts = 0;
  reads = 0;
  readonly outbox = new Map<string, PendingSend>();
  readonly unhandled = new Map<number, StoredEntry>();
  readonly groups = new Map<string, number>();
  readonly groupOutbox = new Map<string, PendingGroupFrame>();

  constructor(initial?: Partial<StoredState>) {
    if (initial?.cursor !== undefined) this.cursor = initial.cursor;
    if (initial?.receipts !== undefined) this.receipts = initial.receipts;
    if (initial?.reads !== undefined) this.reads = initial.reads;
    for (const p of initial?.outbox ?? []) this.outbox.set(p.id, p);
    for (const e of initial?.unhandled ?? []) this.unhandled.set(e.seq, copyEntry(e));
    for (const [g, c] of Object.entries(initial?.groups ?? {})) this.groups.set(g, c);
    for (const p of initial?.groupOutbox ?? []) this.groupOutbox.set(p.id, { id: p.id, frame: p.frame.slice() });
  }

  load(): StoredState {
    return {
      cursor: this.cursor,
      receipts: this.receipts,
      reads: this.reads,
      outbox: [...this.outbox.values()].map((p) => ({ ...p, body: p.body.slice() })),
      unhandled: [...this.unhandled.values()].sort((a, b) => a.seq - b.seq).map(copyEntry),
      ...(this.groups.size > 0 && { groups: Object.fromEntries(this.groups) }),
      ...(this.groupOutbox.size > 0 && { groupOutbox: [...this.groupOutbox.values()].map((p) => ({ id: p.id, frame: p.frame.slice() })) }),
    };
  }

  putGroupPending(item: PendingGroupFrame): void {
    this.groupOutbox.set(item.id, { id: item.id, frame: item.frame.slice() });
  }

  deleteGroupPending(id: string): void {
    this.groupOutbox.delete(id);
  }

  saveGroupCursor(group: string, seq: number): void {
    this.groups.set(group, seq);
  }

  handOut(entries: StoredEntry[], cursor: number): void {
    for (const e of entries) this.unhandled.set(e.seq, copyEntry(e));
    this.cursor = cursor;
  }

  markHandled(seqs: number[]): void {
    for (const s of seqs) this.unhandled.delete(s);
  }

  saveCursor(cursor: number): void {
    this.cursor = cursor;
  }

  saveReceipts(version: number): void {
    this.receipts = version;
  }

  saveReads(version: number): void {
    this.reads = version;
  }

  putPending(item: PendingSend): void {
    this.outbox.set(item.id, { ...item, body: item.body.slice() });
  }

  deletePending(id: string): void {
    this.outbox.delete(id);
  }
}
