/**
 * Where a client keeps what must survive a restart of the app: the delivery cursor (highest sequence number
 * the app has processed) and the outbox (sends not yet acknowledged by the server). A new process with the
 * same device id and the same store resumes with nothing lost and nothing twice.
 *
 * Methods may be synchronous (in-memory, Node file store, localStorage) or return promises (IndexedDB,
 * a database). The client calls them in order and never overlaps two calls.
 */
export interface PendingSend {
  /** Client message id: the idempotency key, reused for every resend. */
  id: string;
  to: string;
  body: Uint8Array;
  /** ms since epoch when the app called send(). */
  createdAt: number;
}

export interface StoredState {
  cursor: number;
  /** Oldest first: the order they are resent in. */
  outbox: PendingSend[];
}

export interface ClientStore {
  load(): StoredState | Promise<StoredState>;
  /** Called after the app's handler ran for the entry with this sequence number, before it is acked. */
  saveCursor(cursor: number): void | Promise<void>;
  /** Called before a send is first written to the socket. */
  putPending(item: PendingSend): void | Promise<void>;
  /** Called when the server acknowledged the send (or refused it for good). */
  deletePending(id: string): void | Promise<void>;
}

/**
 * The default store: survives reconnects of one client object, not a restart of the process. Sharing one
 * MemoryStore between two successive clients simulates a persistent store (tests do this).
 */
export class MemoryStore implements ClientStore {
  cursor = 0;
  readonly outbox = new Map<string, PendingSend>();

  constructor(initial?: Partial<StoredState>) {
    if (initial?.cursor !== undefined) this.cursor = initial.cursor;
    for (const p of initial?.outbox ?? []) this.outbox.set(p.id, p);
  }

  load(): StoredState {
    return { cursor: this.cursor, outbox: [...this.outbox.values()].map((p) => ({ ...p, body: p.body.slice() })) };
  }

  saveCursor(cursor: number): void {
    this.cursor = cursor;
  }

  putPending(item: PendingSend): void {
    this.outbox.set(item.id, { ...item, body: item.body.slice() });
  }

  deletePending(id: string): void {
    this.outbox.delete(id);
  }
}
