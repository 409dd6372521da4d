import { LIMITS, ProtocolError, encodeFrame, type GroupClientFrame, type GroupEntry } from '../../protocol/index.js';
import type { Delivery } from '../delivery.js';
import type { MailboxDeps } from '../mailbox.js';
import type { Conn } from '../ports.js';
import { MarkReporter } from './marks.js';
import { markRead, sendReads } from './reads.js';
import { groupEntriesFor } from './refs.js';
import { MemberGroups } from './store.js';
import type { GroupCall, GroupChange, GroupNews, GroupResult } from './types.js';

/** A device's cursor per group is written when it moved this far since it was last written (and at close). */
const CURSOR_STEP = 64;
/** Entries asked for per read (a page; the group shard caps it too). */
const PULL_PAGE = 64;

/** One device (socket) in one group: what it was sent and acknowledged. Memory only, like ConnState.sent. */
interface DeviceGroup {
  /** Every entry up to here was sent on this socket or is not for this member. */
  sent: number;
  acked: number;
  /** The stored cursor. */
  written: number;
  /** Seqs sent and not yet acknowledged: the window counts entries, not seqs (a member sees only its ranges). */
  unacked: number[];
  pumping: boolean;
  again: boolean;
  /**
   * Entries between two cursor writes: CURSOR_STEP to twice it, fixed per device and group, so that the devices of
   * a large group do not all write their cursors for the same message (1,024 commits in one round otherwise; the
   * fan-out's p99 at 1,024 members did not move measurably with it, see ARCHITECTURE.md "Groups").
   */
  step: number;
  /** Started by the history depth (a device new to its user): entries trimmed before its start are no gap to it. */
  fresh: boolean;
}

/** A spread in [CURSOR_STEP, 2 x CURSOR_STEP) from the names (FNV-1a): stable, no randomness to test around. */
function cursorStep(user: string, device: string, group: string): number {
  let h = 0x811c9dc5;
  const s = `${user}/${device}/${group}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return CURSOR_STEP + ((h >>> 0) % CURSOR_STEP);
}

const DEVICE_GROUPS = new WeakMap<Conn, Map<string, DeviceGroup>>();

export interface GroupMemberDeps {
  deps: MailboxDeps;
  out: Delivery;
  /** The mailbox's token bucket: ms to wait, 0 when a token was taken. */
  take(now: number): number;
  tx<T>(fn: () => T): Promise<T>;
}

/**
 * The member side of groups in a user's shard (design B, docs/ARCHITECTURE.md "Groups"): the user's group frames go
 * to the group's shard (Peers.group); the group pushes each round's entries here, and they go to the sockets whose
 * cursor in that group is where the round starts; any other socket pulls from its cursor, a page at a time, within
 * its window. Nothing is written per entry: a device's cursor per group every 64-127 entries and at close, and
 * the user's membership when a group tells it (groupNews).
 */
export class GroupMember {
  private readonly store: MemberGroups;
  /** The newest seq this shard knows of, per group (from watch answers, pushes and reads). */
  private readonly heads = new Map<string, number>();
  /** Whether this shard told every group of the user that it is online, since it last had no socket. */
  private watched = false;
  /** The delivered / read marks, told to each group at once or coalesced per second (memory only). */
  private readonly marks: MarkReporter;

  constructor(private readonly m: GroupMemberDeps) {
    this.store = new MemberGroups(m.deps.storage.sql, m.deps.user);
    const { clock, scheduler } = m.deps;
    const send = (group: string, delivered: number, read: number) => this.call(group, { op: 'mark', from: this.user, delivered, read });
    this.marks = new MarkReporter({ clock, scheduler, readReceiptsOn: () => this.store.readReceiptsOn(), send });
  }

  private get user(): string {
    return this.m.deps.user;
  }

  // ------------------------------------------------------------------ frames

  async onFrame(conn: Conn, f: GroupClientFrame): Promise<void> {
    const enc = conn.state!.enc;
    if (f.t === 'group_ack') return this.onAck(conn, f.group, f.seq, f.read);
    const ref = f.t === 'group_roster_query' || f.t === 'group_receipts_query' ? f.ref : f.id;
    const wait = this.m.take(this.m.deps.clock.now());
    if (wait > 0) return this.m.out.error(conn, enc, 'rate_limited', 'request rate exceeded', ref, wait);
    let call: GroupCall;
    const from = this.user;
    switch (f.t) {
      case 'group_roster_query':
        call = { op: 'roster', from };
        break;
      case 'group_send':
        call = { op: 'send', from, cid: f.id, body: f.body, ...(f.ref && { ref: f.ref }) };
        break;
      case 'group_receipts_query':
        call = { op: 'receipts', from, seq: f.seq };
        break;
      default:
        call = { op: 'change', from, cid: f.id, change: this.change(f) };
    }
    const r = await this.call(f.group, call);
    const now = conn.state?.enc ?? enc;
    if (r === null) return this.m.out.error(conn, now, 'unavailable', 'the group cannot be reached; retry', ref, 1000);
    if (!r.ok) return this.m.out.error(conn, now, r.code, r.message, ref);
    if ('states' in r) {
      for (let i = 0; i === 0 || i < r.states.length; i += LIMITS.maxGroupBatch) {
        const done = i + LIMITS.maxGroupBatch >= r.states.length;
        this.m.out.reply(conn, now, { t: 'group_receipts', ref, group: f.group, seq: r.seq, members: r.states.slice(i, i + LIMITS.maxGroupBatch), done });
      }
      return;
    }
    if ('members' in r) {
      // Pages of maxGroupBatch members, the last one `done`, so a 1,024-member roster fits in frames.
      for (let i = 0; i === 0 || i < r.members.length; i += LIMITS.maxGroupBatch) {
        const members = r.members.slice(i, i + LIMITS.maxGroupBatch);
        const done = i + LIMITS.maxGroupBatch >= r.members.length;
        this.m.out.reply(conn, now, { t: 'group_roster', ref, group: f.group, name: r.name, meta: r.meta, seq: r.head, members, done });
      }
      return;
    }
    if ('dup' in r) this.m.out.reply(conn, now, { t: 'group_send_ack', id: ref, group: f.group, seq: r.seq, ts: r.ts, dup: r.dup });
  }

  /**
   * A typing frame whose `conv` is a group this user is or was in goes to the group's shard, which pushes it to its
   * online members (ARCHITECTURE.md "Typing"); a refusal (no longer a member) is an error whose `ref` is the group.
   * Null when `conv` is no group of this user: TypingHub treats it as 1:1.
   */
  typing(conn: Conn, conv: string, on: boolean): Promise<void> | null {
    if (!this.store.membership(conv)) return null;
    return this.call(conv, { op: 'typing', from: this.user, on }).then((r) => {
      if (r && !r.ok && conn.state) this.m.out.error(conn, conn.state.enc, r.code, r.message, conv);
    });
  }

  private change(f: Exclude<GroupClientFrame, { t: 'group_ack' | 'group_send' | 'group_roster_query' | 'group_receipts_query' }>): GroupChange {
    switch (f.t) {
      case 'group_create':
        return { kind: 'create', name: f.name, members: f.members };
      case 'group_add':
        return { kind: 'add', members: f.members };
      case 'group_remove':
        return { kind: 'remove', member: f.member };
      case 'group_leave':
        return { kind: 'leave' };
      case 'group_role':
        return { kind: 'role', member: f.member, admin: f.admin };
      case 'group_update':
        return { kind: 'update', name: f.name, meta: f.meta };
    }
  }

  /** The group's answer, or null when its shard could not be reached. */
  private async call(group: string, c: GroupCall): Promise<GroupResult | null> {
    const g = this.m.deps.peers.group;
    if (!g) return null;
    try {
      return await g.call(this.m.deps.peers, group, c);
    } catch (e) {
      this.m.deps.log.log('warn', `${this.user}: group ${group} unreachable`, e);
      return null;
    }
  }

  private async onAck(conn: Conn, group: string, seq: number, read?: number): Promise<void> {
    if (read !== undefined && read > seq) throw new ProtocolError('bad_ack', `group ack: read ${read} beyond seq ${seq}`);
    const existed = DEVICE_GROUPS.get(conn)?.has(group) ?? false;
    const d = this.device(conn, group);
    if (!d) return;
    // Memory lost since the entries were sent (a hibernated Durable Object woke): the device is believed.
    if (!existed) d.sent = Math.max(d.sent, seq);
    if (seq > d.sent) throw new ProtocolError('bad_ack', `group ack for seq ${seq} beyond what was sent in ${group}`);
    // Sent at once when nothing was told in the last second (core/group/marks.ts): awaited with the ack's own work.
    await Promise.all([this.marks.note(group, seq, read ?? 0), this.afterAck(conn, group, d, seq, read)]);
  }

  private async afterAck(conn: Conn, group: string, d: DeviceGroup, seq: number, read?: number): Promise<void> {
    if (read !== undefined && read > 0) await markRead(this.m, this.store, group, read);
    if (seq <= d.acked) return;
    d.unacked = d.unacked.filter((s) => s > seq);
    // Without refs, an ack of everything shown also covers the entries left out after it (see deliver).
    d.acked = conn.state?.refs !== true && d.unacked.length === 0 ? d.sent : seq;
    if (d.acked - d.written >= d.step) await this.saveCursor(conn, group, d);
    await this.pump(conn, group);
  }

  private async saveCursor(conn: Conn, group: string, d: DeviceGroup): Promise<void> {
    const device = conn.state?.device;
    if (device === undefined || d.acked <= d.written) return;
    const at = d.acked;
    await this.m.tx(() => this.store.setCursor(group, device, at));
    d.written = Math.max(d.written, at);
  }

  /** The mailbox's wake-up: the marks' trailing report, when due. */
  tick(): Promise<void> {
    return this.marks.tick();
  }

  // ------------------------------------------------------------------ connections

  /** A device connected: tell the user's groups it is online (once), then bring it up to date in each. */
  async onHello(conn: Conn): Promise<void> {
    const groups = this.store.groups();
    if (groups.length === 0) return;
    sendReads(this.m, this.store, conn);
    if (!this.watched) {
      this.watched = true;
      await Promise.all(groups.filter((g) => g.left_at === 0).map((g) => this.watch(g.grp, true)));
    }
    await Promise.all(
      groups.map((g) => {
        if (g.left_at > 0) this.heads.set(g.grp, g.left_at);
        const d = this.device(conn, g.grp);
        const head = this.heads.get(g.grp);
        return d && (head === undefined || d.sent < head) ? this.pump(conn, g.grp) : undefined;
      }),
    );
  }

  /** A socket closed: its cursors are written; the last one tells the groups the user is offline. */
  async onClose(conn: Conn): Promise<void> {
    const mine = DEVICE_GROUPS.get(conn);
    if (mine) await Promise.all([...mine].map(([g, d]) => this.saveCursor(conn, g, d).catch(() => undefined)));
    const others = [...this.m.deps.sockets.list()].some((c) => c !== conn && c.state !== null);
    // Unwatched even when this memory never watched: a Durable Object woken from hibernation by the close has
    // forgotten that its first hello did.
    if (others) return;
    this.watched = false;
    await Promise.all(this.store.groups().filter((g) => g.left_at === 0).map((g) => this.watch(g.grp, false)));
  }

  private async watch(group: string, on: boolean): Promise<void> {
    const r = await this.call(group, { op: 'watch', from: this.user, on });
    if (r?.ok && 'head' in r && !('entries' in r) && !('members' in r)) this.noteHead(group, r.head);
  }

  private noteHead(group: string, head: number): void {
    if (head > (this.heads.get(group) ?? 0)) this.heads.set(group, head);
  }

  /** The socket's state in a group, made from the device's stored cursor on first use. */
  private device(conn: Conn, group: string): DeviceGroup | undefined {
    const st = conn.state;
    // A client written before groups could not decode group_deliver: for groups it is no device (PROTOCOL.md 13).
    if (st === null || st.groups !== true) return undefined;
    let mine = DEVICE_GROUPS.get(conn);
    if (!mine) DEVICE_GROUPS.set(conn, (mine = new Map()));
    let d = mine.get(group);
    if (!d) {
      const stored = this.store.cursor(group, st.device);
      // Another device of the user stored a cursor here: the user was served in this group, so what is trimmed
      // before the new device's start is history it is not given, no loss (a loss is reported to those devices).
      const known = stored === undefined && st.fresh === true ? this.store.lowestCursor(group, st.device) : undefined;
      const fresh = known !== undefined;
      const cursor = stored ?? (known !== undefined ? this.newDeviceCursor(group, known) : 0);
      // A fresh device's start is written at its first ack or close (written below it), so it is not new again.
      d = { sent: cursor, acked: cursor, written: fresh ? cursor - 1 : cursor, unacked: [], pumping: false, again: false, step: cursorStep(this.user, st.device, group), fresh };
      mine.set(group, d);
    }
    return d;
  }

  /**
   * Where a device new to its user starts in a group (ARCHITECTURE.md "Multi-device sync", the inbox's rule per
   * group): what some known device of the user has not acknowledged yet (`known`, the lowest stored cursor; with
   * none stored the device starts at 0, everything of its ranges), and the newest historyDepth entries. The group's
   * read skips what is outside the member's ranges and starts at the oldest entry kept, so the join and the trim
   * need no look-up here.
   */
  private newDeviceCursor(group: string, known: number): number {
    const head = this.heads.get(group);
    return head === undefined ? known : Math.min(known, Math.max(head - this.m.deps.config.historyDepth, 0));
  }

  // ------------------------------------------------------------------ from the group

  /**
   * A fan-out round (Peers.groupPush), its entries already filtered to this user's ranges: to each socket that has
   * everything up to `after`, within its window; every other socket pulls. False when no device is connected.
   */
  push(group: string, after: number, upTo: number, entries: GroupEntry[]): boolean {
    this.noteHead(group, upTo);
    let any = false;
    for (const c of this.m.deps.sockets.list()) {
      const d = this.device(c, group);
      if (!d) continue;
      any = true;
      if (d.pumping || d.sent < after) {
        void this.pump(c, group);
        continue;
      }
      const fresh = entries.filter((e) => e.seq > d.sent);
      const room = this.m.deps.config.sendWindow - d.unacked.length;
      if (fresh.length > room) {
        if (room > 0) this.deliver(c, group, d, fresh.slice(0, room), fresh[room - 1]!.seq);
        continue; // the rest is pulled once the device acknowledges
      }
      this.deliver(c, group, d, fresh, upTo);
    }
    return any;
  }

  /** A device's stored cursor in a group (0: none): how far it acknowledged, as of its last write (push skips it). */
  deviceCursor(group: string, device: string): number {
    return this.store.cursor(group, device) ?? 0;
  }

  /** The user's range in a group changed (Peers.groupNews): stored, then its devices catch up. */
  async news(n: GroupNews): Promise<void> {
    await this.m.tx(() => {
      const known = this.store.membership(n.group);
      if (known && (known.joined > n.joined || (known.joined === n.joined && known.left_at >= n.left && known.left_at !== 0))) return;
      this.store.setMembership(n.group, n.joined, n.left);
    });
    const conns = [...this.m.deps.sockets.list()].filter((c) => c.state?.groups === true);
    if (conns.length === 0) return;
    if (n.left === 0) await this.watch(n.group, true);
    else this.noteHead(n.group, n.left);
    await Promise.all(conns.map((c) => this.pump(c, n.group)));
  }

  private deliver(conn: Conn, group: string, d: DeviceGroup, all: GroupEntry[], upTo: number): boolean {
    // A client written before references gets replies as plain messages and no edits, deletes or reactions.
    let rest = groupEntriesFor(all, conn.state!.refs);
    const skipped = rest.length < all.length;
    while (rest.length > 0) {
      // A frame must fit in maxFrameBytes: halve the batch until it does (one entry always fits).
      let batch = rest.slice(0, LIMITS.maxDeliverBatch);
      let data = encodeFrame({ t: 'group_deliver', group, entries: batch }, conn.state!.enc);
      while (batch.length > 1 && (typeof data === 'string' ? data.length : data.byteLength) > LIMITS.maxFrameBytes) {
        batch = batch.slice(0, Math.ceil(batch.length / 2));
        data = encodeFrame({ t: 'group_deliver', group, entries: batch }, conn.state!.enc);
      }
      if (!this.m.out.write(conn, data)) return false;
      for (const e of batch) d.unacked.push(e.seq);
      d.sent = batch.at(-1)!.seq;
      this.m.deps.metrics?.delivered?.(batch.length);
      rest = rest.slice(batch.length);
    }
    d.sent = Math.max(d.sent, upTo);
    // Nothing shown is unacknowledged: the entries left out are acknowledged here (the device cannot ack them).
    if (skipped && d.unacked.length === 0) d.acked = Math.max(d.acked, d.sent);
    return true;
  }

  /** Pulls from the group what this socket is missing, a page at a time, within its window. */
  private async pump(conn: Conn, group: string): Promise<void> {
    const d = this.device(conn, group);
    if (!d) return;
    if (d.pumping) {
      d.again = true;
      return;
    }
    d.pumping = true;
    try {
      do {
        d.again = false;
        const room = this.m.deps.config.sendWindow - d.unacked.length;
        const head = this.heads.get(group);
        if (room <= 0 || conn.state === null || (head !== undefined && d.sent >= head)) break;
        const r = await this.call(group, { op: 'read', from: this.user, after: d.sent, limit: Math.min(room, PULL_PAGE) });
        if (r === null || !r.ok || !('entries' in r) || conn.state === null) break;
        this.noteHead(group, r.head);
        // A new device that starts by the history depth is given what is kept, without a gap (nothing of its was lost).
        if (r.gap !== undefined && !d.fresh) this.m.out.error(conn, conn.state.enc, 'history_gap', `entries of ${group} before ${r.gap + 1} are no longer kept`, group);
        d.fresh = false;
        if (!this.deliver(conn, group, d, r.entries, r.upTo)) break;
        if (r.upTo < r.head) d.again = true;
      } while (d.again);
    } finally {
      d.pumping = false;
    }
  }
}
