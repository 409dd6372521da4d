import type { Entry, ReadState, Receipts } from '../protocol/index.js';
import { IrisError, errText } from './errors.js';
import type { LinkSource } from './link.js';
import type { StoreQueue } from './store-queue.js';
import type { StoredEntry, StoredState } from './store.js';
import type { IrisMessage, IrisOutgoing, IrisRead, IrisReadPosition, IrisReceipt, RecoveredEntry } from './types.js';

const utf8Text = new TextDecoder();

/** What the inbox hands to the app. Each runs the listeners in order and resolves with what they threw. */
export interface InboxListeners {
  message(m: IrisMessage): Promise<unknown[]>;
  /** A message this user sent from another device (multi-device sync). */
  sent(s: IrisOutgoing): Promise<unknown[]>;
  receipt(r: IrisReceipt): Promise<unknown[]>;
  read(r: IrisRead): Promise<unknown[]>;
  readState(p: IrisReadPosition): Promise<unknown[]>;
  recovered(r: RecoveredEntry): Promise<unknown[]>;
  /** A listener threw or rejected. */
  listenerFailed(e: unknown): void;
  /** Failures not tied to a call (store writes, processing). */
  error(e: IrisError): void;
}

export interface InboxOptions {
  queue: StoreQueue;
  link: LinkSource;
  listeners: InboxListeners;
  /** False once the app closed the client: new entries are then left on the server (see process). */
  active: () => boolean;
  /**
   * Whether a `sent` entry is one this client sent (its send_ack named `msg`; the server writes the ack before
   * the entry on the sending socket): such entries are acked without an event.
   */
  isOwn: (msg: string) => boolean;
  /** A deliver_ack after this many processed entries... */
  ackEvery: number;
  /** ...or this long after the last one. */
  ackDelayMs: number;
}

/**
 * The receiving half: hands delivered entries and receipt states to the app in order, each entry at most once
 * ever for a given store (recorded as handed out before any listener sees it), and acks them to the server in
 * batches once their listeners finished.
 */
export class Inbox {
  private cursorValue = 0;
  /** Receipt version processed (PROTOCOL.md 9.6): the `upTo` of the last receipts frame whose listeners ran. */
  private receiptsValue = 0;
  /** Read version processed (PROTOCOL.md 9.8): the `upTo` of the last read_state frame whose listeners ran. */
  private readsValue = 0;
  /** Highest seq whose listeners finished (or that needed none): deliver_acks never go beyond it. */
  private ackable = 0;
  /** Entries processed since the last deliver_ack. */
  private unacked = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  /** The welcomed socket acks go to, the highest seq it delivered (it may be acked for no more) and its last ack. */
  private ackGen = 0;
  private maxSeq = 0;
  private acked = 0;
  /** Deliveries are processed one entry at a time, in order, across sockets. */
  private work: Promise<void> = Promise.resolve();

  constructor(private readonly o: InboxOptions) {}

  /**
   * Highest sequence number handed out to the app (recorded in the store before any listener saw it): no entry
   * at or below it is ever emitted as `message` / `receipt` again by a client on the same store.
   */
  get cursor(): number {
    return this.cursorValue;
  }

  /** The receipt version a hello carries. */
  get receipts(): number {
    return this.receiptsValue;
  }

  /** The read version a hello carries. */
  get reads(): number {
    return this.readsValue;
  }

  /** Takes over what the store kept; entries an earlier client handed out unfinished go to 'recovered' first. */
  restore(st: StoredState): void {
    this.cursorValue = Math.max(this.cursorValue, st.cursor);
    this.ackable = Math.max(this.ackable, st.cursor);
    this.receiptsValue = Math.max(this.receiptsValue, st.receipts ?? 0);
    this.readsValue = Math.max(this.readsValue, st.reads ?? 0);
    const unfinished = st.unhandled ?? [];
    if (unfinished.length > 0) this.enqueue(() => this.recover(unfinished), 'recovery failed');
  }

  /**
   * Runs `task` after every delivery queued before it (a frame that must be decoded asynchronously keeps its
   * place this way). Failures are reported with `what`, or ignored without it.
   */
  enqueue(task: () => void | Promise<void>, what?: string): void {
    this.work = this.work.then(task).catch((e: unknown) => {
      if (what !== undefined) this.o.listeners.error(new IrisError('internal', `${what}: ${errText(e)}`));
    });
  }

  /** A socket was welcomed: acks now go to it, and delivery resumes where the server says. */
  resume(gen: number, welcomeCursor: number, helloCursor: number): void {
    this.ackGen = gen;
    this.maxSeq = welcomeCursor;
    this.acked = welcomeCursor;
    // The server resumes after max(its record, our hello cursor), clamped to its inbox head. It is ahead of us
    // when an earlier install of this device acked further (the local store was lost); it is behind our hello
    // only when its inbox is shorter than our cursor (its data was reset), and then skipping "already seen"
    // seqs would drop new messages. (Entries still being processed from the old socket may have moved our
    // cursor past the hello meanwhile: those come again and are skipped as duplicates.)
    if (welcomeCursor > this.cursorValue || welcomeCursor < helloCursor) {
      this.cursorValue = welcomeCursor;
      this.ackable = welcomeCursor;
      this.o.queue.run((st) => st.saveCursor(welcomeCursor));
    }
  }

  /** A deliver frame from socket `gen`. */
  deliver(gen: number, entries: Entry[]): void {
    if (entries.length === 0) return;
    const last = entries[entries.length - 1]!.seq;
    if (gen === this.ackGen && last > this.maxSeq) this.maxSeq = last;
    this.enqueue(() => this.process(entries), 'delivery processing failed');
  }

  /**
   * Receipt states (PROTOCOL.md 9.6), in the same queue as deliveries so listeners see them in arrival order. The
   * version is recorded after the listeners ran: a crash before that replays them (a receipt is idempotent
   * state), it never skips one.
   */
  receiptsFrame(f: Receipts): void {
    this.enqueue(async () => {
      for (const it of f.items) {
        const errors = await this.o.listeners.receipt({ seq: 0, msg: it.msg, by: it.peer, ts: it.ts });
        if (it.read !== undefined) errors.push(...(await this.o.listeners.read({ msg: it.read, by: it.peer, ts: it.readTs ?? 0 })));
        for (const err of errors) this.o.listeners.listenerFailed(err);
      }
      // The server's version is authoritative (it starts again from 0 when its store was replaced).
      this.receiptsValue = f.upTo;
      if (this.o.queue.store.saveReceipts) this.o.queue.run((st) => st.saveReceipts!(f.upTo));
    }, 'receipt processing failed');
  }

  /** Read positions of this user's conversations (PROTOCOL.md 9.8): like receipts, recorded after the listeners. */
  readStateFrame(f: ReadState): void {
    this.enqueue(async () => {
      for (const it of f.items) {
        for (const err of await this.o.listeners.readState({ conv: it.conv, msg: it.msg, ts: it.ts })) this.o.listeners.listenerFailed(err);
      }
      this.readsValue = f.upTo;
      if (this.o.queue.store.saveReads) this.o.queue.run((st) => st.saveReads!(f.upTo));
    }, 'read state processing failed');
  }

  /** Sends the deliver_ack due now, if any (close, page hidden, batch full). */
  flushAck(): void {
    this.cancelAck();
    const link = this.o.link.current();
    if (link === null || link.gen !== this.ackGen) return;
    // Never ack beyond what this socket delivered (the server refuses that), nor beyond what the app processed.
    const seq = Math.min(this.ackable, this.maxSeq);
    if (seq <= this.acked) return;
    this.acked = seq;
    this.unacked = 0;
    link.write({ t: 'deliver_ack', seq });
  }

  /** The socket is gone: a pending ack goes to the next one instead (its welcome cursor covers it). */
  cancelAck(): void {
    if (this.ackTimer) clearTimeout(this.ackTimer);
    this.ackTimer = null;
  }

  /**
   * Hands entries to the app in order, each at most once ever: the new ones (seq > cursor) are written to the
   * store as handed out, with the new cursor, in one write BEFORE any listener sees them; then each goes to
   * its listeners, is marked handled when they finished, and becomes ackable.
   */
  private async process(entries: Entry[]): Promise<void> {
    const fresh: Entry[] = [];
    let top = this.cursorValue;
    for (const e of entries) {
      if (e.seq > top) {
        fresh.push(e);
        top = e.seq;
      }
    }
    if (fresh.length > 0) {
      if (!this.o.active()) return; // closed: nothing handed out; it all comes again after the cursor next time
      const stored = fresh.map(toStored);
      const p = this.o.queue.runAsync((st) => st.handOut(stored, top));
      if (p) await p;
      this.cursorValue = top;
    }
    let i = 0;
    for (const e of entries) {
      if (i < fresh.length && fresh[i] === e) {
        i++;
        // Once handed out, an entry goes to its listeners even if close() came meanwhile: it will never be
        // emitted as a message again, so this is its one chance outside 'recovered'.
        const errors =
          e.kind === 'message'
            ? await this.o.listeners.message(toMessage(e))
            : e.kind === 'sent'
              ? this.o.isOwn(e.msg)
                ? []
                : await this.o.listeners.sent(toOutgoing(e))
              : await this.o.listeners.receipt(toReceipt(e));
        for (const err of errors) this.o.listeners.listenerFailed(err);
        const seq = e.seq;
        this.o.queue.run((st) => st.markHandled([seq]));
      }
      // Acked only once its listeners finished: with a store that does not survive the process (MemoryStore),
      // an entry whose handler was cut short by a crash then comes again from the server.
      if (e.seq > this.ackable && e.seq <= this.cursorValue) this.ackable = e.seq;
      this.unacked++;
      this.scheduleAck();
    }
  }

  /** Gives entries handed out by an earlier client whose listeners never finished to 'recovered' listeners. */
  private async recover(entries: StoredEntry[]): Promise<void> {
    for (const e of entries) {
      const r: RecoveredEntry =
        e.kind === 'message'
          ? { kind: 'message', message: toMessage(e) }
          : e.kind === 'sent'
            ? { kind: 'sent', sent: toOutgoing(e) }
            : { kind: 'receipt', receipt: toReceipt(e) };
      const errors = await this.o.listeners.recovered(r);
      for (const err of errors) this.o.listeners.listenerFailed(err);
      if (errors.length > 0) continue; // a listener failed: keep it for the next start
      const seq = e.seq;
      this.o.queue.run((st) => st.markHandled([seq]));
    }
  }

  private scheduleAck(): void {
    const link = this.o.link.current();
    if (link === null || link.gen !== this.ackGen) return;
    if (Math.min(this.ackable, this.maxSeq) <= this.acked) return;
    if (this.unacked >= this.o.ackEvery) {
      this.flushAck();
      return;
    }
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.flushAck(), this.o.ackDelayMs);
  }
}

function toStored(e: Entry): StoredEntry {
  const s: StoredEntry = { seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body };
  if (e.ref) s.ref = e.ref;
  return s;
}

function toMessage(e: StoredEntry): IrisMessage {
  const body = e.body;
  const m: IrisMessage = { seq: e.seq, msg: e.msg, from: e.peer, ts: e.ts, body, text: () => utf8Text.decode(body) };
  if (e.ref) m.ref = { kind: e.ref.kind, msg: e.ref.msg };
  return m;
}

function toOutgoing(e: StoredEntry): IrisOutgoing {
  const body = e.body;
  const s: IrisOutgoing = { seq: e.seq, msg: e.msg, to: e.peer, ts: e.ts, body, text: () => utf8Text.decode(body) };
  if (e.ref) s.ref = { kind: e.ref.kind, msg: e.ref.msg };
  return s;
}

function toReceipt(e: StoredEntry): IrisReceipt {
  return { seq: e.seq, msg: e.msg, by: e.peer, ts: e.ts };
}
