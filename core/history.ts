import type { Entry, MessageRef } from '../protocol/index.js';
import type { Conn, ConnState } from './ports.js';
import type { MailboxStore } from './store.js';

/**
 * Multi-device sync and history for new devices (PROTOCOL.md 9.10, docs/ARCHITECTURE.md "Multi-device sync").
 *
 * A 1:1 send leaves a `sent` entry (peer = the recipient) in the SENDER's own inbox, in the same commit as the
 * send, so the user's other devices get it through the ordinary deliver stream: in the user's own order,
 * resumably, exactly once per device, with the cursors that already exist. Nothing here is forwarded: a sent
 * entry never leaves its user's shard, owes no receipt and is no dedup mark (core/store.ts skips the kind).
 *
 * It costs a row written now and a row deleted by the trim (both billed on Cloudflare), so it is written only
 * for users who can see it: more than one device registered, or history kept for devices yet to come.
 *
 * History: the trim still moves `trimmed` (everything up to it is acknowledged by every device: receipts,
 * dedup floors and the inbox cap keep their meaning) but deletes only up to `head - depth`; the newest `depth`
 * entries stay, both directions. A device the user never had before starts at max(oldest stored, head -
 * depth), or earlier where a known device has not acked yet (newDeviceCursor), and receives them through the
 * ordinary stream. Devices the server knows resume at their cursor, as before. A new device's cursor may thus
 * be below `trimmed`: until it catches up the trim waits, as it waits for any device behind.
 */
export class History {
  constructor(
    private readonly store: MailboxStore,
    /** Config.historyDepth: entries kept after every device acked them. */
    private readonly depth: number,
  ) {}

  /** Whether a send to `to` leaves a sent entry: never to oneself (the message itself is in the inbox). */
  keepsSent(to: string): boolean {
    return to !== this.store.user && (this.depth > 0 || this.store.deviceCount() > 1);
  }

  /**
   * Appends the sent entry of an accepted send; inside the send's commit. The sending socket is held from its
   * seq on (see hold) until the caller has written the send_ack: the SDK tells its own sends from those of the
   * user's other devices by the ids in its acks, so the ack must come first.
   */
  recordSent(conn: Conn, msg: string, to: string, ts: number, body: Uint8Array, ref: MessageRef | undefined): Entry | undefined {
    if (!this.keepsSent(to)) return undefined;
    const seq = this.store.userRow().next_seq;
    // The other devices see a reply, an edit, a delete or a reaction as what it is (PROTOCOL.md 9.9).
    const entry: Entry = { seq, kind: 'sent', msg, peer: to, ts, body, ...(ref && { ref }) };
    // n = 0: a sent entry carries no outbox number of the peer (it is no dedup mark; store.ts skips it anyway).
    this.store.inboxAppend(seq, [{ ...entry, n: 0 }]);
    hold(conn, seq);
    return entry;
  }

  /**
   * Where a device this user never had starts, given `trimmed` as a trim just left it (every known device
   * acked up to there): everything some known device has not acked yet, as before history, and the newest
   * `depth` entries, never below what is still stored.
   */
  newDeviceCursor(head: number, trimmed: number): number {
    if (this.depth === 0) return Math.min(head, trimmed);
    return Math.min(head, trimmed, Math.max(head - this.depth, this.store.inboxFloor()));
  }

  /** How far the trim deletes when every device acked up to `acked`: the newest `depth` entries stay. */
  deleteUpTo(acked: number): number {
    return Math.min(acked, this.store.userRow().next_seq - 1 - this.depth);
  }
}

/**
 * Per socket: the lowest seq of a sent entry whose send_ack is not written yet, and how many such sends are in
 * flight. Delivery writes nothing from that seq on to the socket until they are all answered. Module-level like
 * Delivery's per-socket tables (a Conn belongs to one mailbox); in memory only, since a send and its ack are one
 * event of the shard.
 */
const HELD = new WeakMap<Conn, { from: number; count: number }>();

function hold(conn: Conn, seq: number): void {
  const h = HELD.get(conn);
  if (h) {
    h.from = Math.min(h.from, seq);
    h.count++;
  } else HELD.set(conn, { from: seq, count: 1 });
}

/** The send_ack for one held send was written (or its commit failed): the socket may get its entries. */
export function releaseHeld(conn: Conn): void {
  const h = HELD.get(conn);
  if (h && --h.count <= 0) HELD.delete(conn);
}

/** Entries from this seq on must wait for a send_ack on this socket; Infinity when none is awaited. */
export function heldFrom(conn: Conn): number {
  return HELD.get(conn)?.from ?? Infinity;
}

