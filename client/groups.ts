import { CLIENT_ID_PATTERN, ID_PATTERN, LIMITS, decodeBinary, encodeBinary, type ClientFrame, type ErrorFrame, type GroupDeliver, type GroupEntry, type GroupMemberInfo, type GroupMemberReceipt, type GroupReceipts, type GroupRoster, type GroupSendAck, type MessageRef } from '../protocol/index.js';
import { IrisError, errorOfFrame } from './errors.js';
import type { LinkSource } from './link.js';
import type { StoreQueue } from './store-queue.js';
import type { PendingGroupFrame } from './store.js';

/**
 * The SDK's side of groups (PROTOCOL.md 9.11). Every frame that changes a group (create, add, remove, leave, role,
 * update, send) is kept until the server acknowledged it and written again, with its id, after every welcome, so
 * a drop costs nothing (the server answers a retry with the original seq, dup true). Deliveries: a cursor per
 * group, kept in the store, drops every entry at or below it (what a reconnect may send again), so each entry
 * reaches the app once per device; the cursor is saved and the entries acknowledged after the listeners ran.
 */

const td = new TextDecoder();
/** A group_ack goes out after this many entries of a group, or this long after the first unacknowledged one. */
const ACK_EVERY = 32;
const ACK_DELAY_MS = 50;

/** A group message as the app sees it. */
export interface GroupMessage {
  group: string;
  seq: number;
  from: string;
  ts: number;
  body: Uint8Array;
  text(): string;
  /** A reply, edit, delete or reaction: `ref.msg` is the target's seq in decimal (PROTOCOL.md 9.11). */
  ref?: MessageRef;
}

/** A membership change or rename (every kind but message). */
export interface GroupEvent {
  group: string;
  seq: number;
  kind: Exclude<GroupEntry['kind'], 'message'>;
  from: string;
  /** The member it is about ("" for an update). */
  subject: string;
  /** The group's name after a create or update. */
  name: string;
  ts: number;
  /** The metadata of an update; for a role, 01 admin and 00 not. */
  body: Uint8Array;
}

export interface GroupAckResult {
  group: string;
  seq: number;
  ts: number;
  dup: boolean;
}

export interface RosterResult {
  group: string;
  name: string;
  meta: Uint8Array;
  seq: number;
  members: GroupMemberInfo[];
}

type Pending = { frame: ClientFrame; resolve: (a: GroupAckResult) => void; reject: (e: IrisError) => void };
export interface GroupReceiptsResult {
  group: string;
  seq: number;
  /** Every member who may see the message (its sender left out), with how far it got. */
  members: GroupMemberReceipt[];
}

type ReceiptsQuery = { members: GroupMemberReceipt[]; resolve: (r: GroupReceiptsResult) => void; reject: (e: IrisError) => void; frame: ClientFrame };
type Query = { group: string; members: GroupMemberInfo[]; resolve: (r: RosterResult) => void; reject: (e: IrisError) => void; frame: ClientFrame };

export interface GroupsDeps {
  link: LinkSource;
  queue: StoreQueue;
  emitMessage(m: GroupMessage): Promise<void>;
  emitEvent(e: GroupEvent): Promise<void>;
  /** Every answered change or send (those a restarted client resent too, which no promise waits for). */
  emitAck(a: GroupAckResult & { id: string }): void;
}

export class Groups {
  private readonly pending = new Map<string, Pending>();
  private readonly queries = new Map<string, Query>();
  private readonly receiptQueries = new Map<string, ReceiptsQuery>();
  private readonly cursors = new Map<string, number>();
  /** Acks not yet written, per group: the newest seq, the socket it came on, entries since the last ack. */
  private readonly acks = new Map<string, { seq: number; gen: number; count: number }>();
  private ackTimer: ReturnType<typeof setTimeout> | null = null;
  /** Deliveries are processed one frame at a time, in arrival order. */
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly d: GroupsDeps) {}

  /** Cursors and unanswered frames from the store (before the first welcome). */
  restore(cursors: Record<string, number> | undefined, outbox: PendingGroupFrame[] | undefined): void {
    for (const [g, c] of Object.entries(cursors ?? {})) if (c > (this.cursors.get(g) ?? 0)) this.cursors.set(g, c);
    for (const p of outbox ?? []) {
      if (this.pending.has(p.id)) continue;
      try {
        // Nobody waits for these: their answer is the groupAck event (or an error event).
        this.pending.set(p.id, { frame: decodeBinary(p.frame) as ClientFrame, resolve: () => {}, reject: () => {} });
      } catch {
        this.d.queue.run((st) => st.deleteGroupPending?.(p.id));
      }
    }
  }

  cursor(group: string): number {
    return this.cursors.get(group) ?? 0;
  }

  /** Writes a change or send now if connected; kept and written again after each welcome until answered. */
  request(id: string, frame: ClientFrame): Promise<GroupAckResult> {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { frame, resolve, reject });
      // Stored before it is first written, like a send: a restarted client writes it again.
      this.d.queue.run(
        (st) => st.putGroupPending?.({ id, frame: encodeBinary(frame) }),
        () => {
          if (this.pending.has(id)) this.d.link.current()?.write(frame);
        },
      );
    });
  }

  roster(ref: string, group: string): Promise<RosterResult> {
    return new Promise((resolve, reject) => {
      const frame: ClientFrame = { t: 'group_roster_query', ref, group };
      this.queries.set(ref, { group, members: [], resolve, reject, frame });
      this.d.link.current()?.write(frame);
    });
  }

  receipts(ref: string, group: string, seq: number): Promise<GroupReceiptsResult> {
    return new Promise((resolve, reject) => {
      const frame: ClientFrame = { t: 'group_receipts_query', ref, group, seq };
      this.receiptQueries.set(ref, { members: [], resolve, reject, frame });
      this.d.link.current()?.write(frame);
    });
  }

  receiptsPage(f: GroupReceipts): void {
    const q = this.receiptQueries.get(f.ref);
    if (!q) return;
    q.members.push(...f.members);
    if (!f.done) return;
    this.receiptQueries.delete(f.ref);
    q.resolve({ group: f.group, seq: f.seq, members: q.members });
  }

  /** The user read `group` up to `seq` (no further than this device processed): an ack that carries it. */
  markRead(group: string, seq: number): void {
    const cursor = this.cursor(group);
    if (cursor === 0) return;
    this.flushAcks();
    this.d.link.current()?.write({ t: 'group_ack', group, seq: cursor, read: Math.min(seq, cursor) });
  }

  /** After a welcome: everything not answered goes out again (same ids; the server dedups). */
  rewrite(): void {
    const link = this.d.link.current();
    if (link === null) return;
    for (const p of this.pending.values()) link.write(p.frame);
    for (const q of [...this.queries.values(), ...this.receiptQueries.values()]) {
      q.members = [];
      link.write(q.frame);
    }
  }

  acked(f: GroupSendAck): void {
    const p = this.pending.get(f.id);
    if (!p) return;
    this.pending.delete(f.id);
    this.d.queue.run((st) => st.deleteGroupPending?.(f.id));
    const a = { group: f.group, seq: f.seq, ts: f.ts, dup: f.dup };
    p.resolve(a);
    this.d.emitAck({ id: f.id, ...a });
  }

  rosterPage(f: GroupRoster): void {
    const q = this.queries.get(f.ref);
    if (!q) return;
    q.members.push(...f.members);
    if (!f.done) return;
    this.queries.delete(f.ref);
    q.resolve({ group: f.group, name: f.name, meta: f.meta, seq: f.seq, members: q.members });
  }

  /** An error frame with a ref: true when it answered one of ours. Retryable refusals are written again later. */
  refused(f: ErrorFrame & { ref: string }): boolean {
    const p = this.pending.get(f.ref);
    const q = this.queries.get(f.ref) ?? this.receiptQueries.get(f.ref);
    if (!p && !q) return false;
    if ((f.code === 'rate_limited' || f.code === 'unavailable') && f.retryAfter !== undefined) {
      const frame = (p ?? q)!.frame;
      setTimeout(() => this.d.link.current()?.write(frame), f.retryAfter);
      return true;
    }
    const err = errorOfFrame(f);
    if (p) {
      this.pending.delete(f.ref);
      this.d.queue.run((st) => st.deleteGroupPending?.(f.ref));
      p.reject(err);
    } else {
      this.queries.delete(f.ref);
      this.receiptQueries.delete(f.ref);
      q!.reject(err);
    }
    return true;
  }

  /** Ends every waiting call (the client closed). Unanswered changes stay in the store for a later client. */
  rejectAll(e: IrisError): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.acks.clear();
    for (const p of this.pending.values()) p.reject(e);
    for (const q of [...this.queries.values(), ...this.receiptQueries.values()]) q.reject(e);
    this.pending.clear();
    this.queries.clear();
    this.receiptQueries.clear();
  }

  /** Entries from the welcomed socket `gen`. */
  deliver(f: GroupDeliver, gen: number): void {
    this.chain = this.chain.then(() => this.process(f, gen)).catch(() => undefined);
  }

  private async process(f: GroupDeliver, gen: number): Promise<void> {
    const fresh = f.entries.filter((e) => e.seq > this.cursor(f.group));
    for (const e of fresh) {
      if (e.kind === 'message') {
        const body = e.body;
        await this.d.emitMessage({ group: f.group, seq: e.seq, from: e.from, ts: e.ts, body, text: () => td.decode(body), ...(e.ref && { ref: e.ref }) });
      } else {
        await this.d.emitEvent({ group: f.group, seq: e.seq, kind: e.kind, from: e.from, subject: e.subject, name: e.name, ts: e.ts, body: e.body });
      }
      this.cursors.set(f.group, e.seq);
    }
    const last = f.entries.at(-1)?.seq;
    if (last === undefined) return;
    if (fresh.length > 0) {
      const seq = this.cursor(f.group);
      this.d.queue.run((st) => st.saveGroupCursor?.(f.group, seq));
    }
    // Acknowledged even when all was dropped: the server's window moves on either way. Only on the socket that
    // sent them: a newer one starts from the stored cursor, and an ack beyond what it sent would be bad_ack.
    // Coalesced like the inbox's acks: one frame per group every ACK_EVERY entries or ACK_DELAY_MS (an incoming
    // WebSocket message is what Cloudflare bills), far inside the server's window of 256.
    const prev = this.acks.get(f.group);
    const count = (prev?.gen === gen ? prev.count : 0) + f.entries.length;
    this.acks.set(f.group, { seq: last, gen, count });
    if (count >= ACK_EVERY) this.flushAcks();
    else this.ackTimer ??= setTimeout(() => this.flushAcks(), ACK_DELAY_MS);
  }

  /** Writes the coalesced acks (those of an older socket are dropped: the new one resumes from the server's cursor). */
  flushAcks(): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const link = this.d.link.current();
    for (const [group, a] of this.acks) if (link?.gen === a.gen) link.write({ t: 'group_ack', group, seq: a.seq });
    this.acks.clear();
  }
}

/** A group frame the server would refuse as malformed, refused here instead (null: fine). */
export function checkRequest(id: string, frame: ClientFrame, members: string[]): IrisError | null {
  if (!CLIENT_ID_PATTERN.test(id)) return new IrisError('invalid_field', 'id: expected 1-64 visible ASCII chars');
  if (!('group' in frame) || !ID_PATTERN.test(frame.group)) return new IrisError('invalid_field', 'group: not a valid group id');
  if (members.length > LIMITS.maxGroupBatch) return new IrisError('invalid_field', `members: at most ${LIMITS.maxGroupBatch}`);
  for (const m of members) if (!ID_PATTERN.test(m)) return new IrisError('invalid_field', `members: "${m}" is not a valid user id`);
  return null;
}
