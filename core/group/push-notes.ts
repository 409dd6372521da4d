import type { GroupEntry } from '../../protocol/index.js';
import type { Clock, Logger, Peers, Scheduler } from '../ports.js';
import type { PushSettings } from '../push.js';
import type { MemberRow } from './store.js';

/**
 * Push webhooks for group messages (docs/OPERATIONS.md "Push webhooks"), the group's half. The fan-out reaches only
 * members whose shard has a device connected (core/group/fanout.ts): a member with none is not called at all, and
 * its shard never hears of the entry until a device connects and pulls. So the GROUP is the one place that knows,
 * on both profiles, that an entry landed for a member that is offline: this counts, per offline member, the
 * messages committed since it was last told, and after IRIS_PUSH_COALESCE_MS tells the member's shard ONE note
 * (Peers.groupNote: the latest message, its sender, the count). The member's shard (core/push.ts) knows the
 * devices: it counts the note for each registered device that is offline, in the same per-device window as 1:1
 * messages, and sends the webhook from its own wake-up. A member online in the group whose OTHER devices are
 * offline is counted by its own shard from the fan-out round (Mailbox.groupPush).
 *
 * Off the message path: notes are counted after the commit and leave from the group's wake-up, never awaited by a
 * send. A burst to a group of M offline members costs M calls per coalescing window, not M per message. Memory
 * only, like the fan-out: a group shard restarted inside a window forgets that window's notes (the messages are
 * in the log and reach the devices when they connect; only the push is lost); what a member's shard took is in
 * its push_pending table. A note that fails is retried from the wake-up with the push backoff, up to
 * IRIS_PUSH_MAX_ATTEMPTS calls.
 */

export interface GroupPushNote {
  group: string;
  /** The latest message counted: its sender, seq and acceptance time. */
  sender: string;
  seq: number;
  ts: number;
  /** Messages counted for this member since its last note. */
  count: number;
}

export interface GroupPushNotesDeps {
  group: string;
  peers: Peers;
  clock: Clock;
  scheduler: Scheduler;
  log: Logger;
  push: PushSettings;
}

/** Notes started per wake-up; the rest wait for the next one (asked for at once), like the fan-out's rounds. */
const NOTES_PER_WAKE = 256;

interface Waiting {
  note: GroupPushNote;
  attempts: number;
  due: number;
}

export class GroupPushNotes {
  private readonly waiting = new Map<string, Waiting>();
  /** Members whose note is in flight: what lands meanwhile waits for the next note. */
  private readonly flying = new Set<string>();

  constructor(
    private readonly d: GroupPushNotesDeps,
    /** The group shard's memory: every membership range per user, and the members with a device connected. */
    private readonly ranges: Map<string, MemberRow[]>,
    private readonly online: Set<string>,
  ) {}

  /** After the commit of a fan-out round: its messages count for every current member that is offline, but their senders. */
  landed(entries: GroupEntry[]): void {
    const messages = entries.filter((e) => e.kind === 'message');
    if (messages.length === 0 || !this.d.peers.groupNote) return;
    const now = this.d.clock.now();
    for (const [user, list] of this.ranges) {
      const r = list.at(-1)!;
      if (r.left_at !== 0 || this.online.has(user)) continue;
      let count = 0;
      let latest: GroupEntry | undefined;
      for (const e of messages) {
        if (e.from === user || e.seq < r.joined) continue;
        count++;
        latest = e;
      }
      if (!latest) continue;
      const w = this.waiting.get(user);
      const note = { group: this.d.group, sender: latest.from, seq: latest.seq, ts: latest.ts, count: count + (w?.note.count ?? 0) };
      if (w) w.note = note;
      else {
        this.waiting.set(user, { note, attempts: 0, due: now + this.d.push.coalesceMs });
        this.d.scheduler.wakeAt(now + this.d.push.coalesceMs);
      }
    }
  }

  /** The group's wake-up: notes that are due leave; none is awaited. */
  wake(): void {
    const note = this.d.peers.groupNote;
    if (!note) return;
    const now = this.d.clock.now();
    let started = 0;
    let next = Infinity;
    for (const [user, w] of this.waiting) {
      if (this.flying.has(user)) continue;
      if (w.due > now || started >= NOTES_PER_WAKE) {
        next = Math.min(next, Math.max(w.due, now));
        continue;
      }
      started++;
      this.waiting.delete(user);
      this.flying.add(user);
      note.call(this.d.peers, user, w.note).then(
        () => this.done(user),
        (e: unknown) => this.failed(user, w, e),
      );
    }
    if (next !== Infinity) this.d.scheduler.wakeAt(next);
  }

  private done(user: string): void {
    this.flying.delete(user);
    // Messages counted while the note was in flight have their own window (opened in landed()).
    const w = this.waiting.get(user);
    if (w) this.d.scheduler.wakeAt(w.due);
  }

  private failed(user: string, w: Waiting, e: unknown): void {
    this.flying.delete(user);
    const attempts = w.attempts + 1;
    if (attempts >= this.d.push.maxAttempts) {
      this.d.log.log('warn', `group ${this.d.group}: push note for ${user} dropped after ${attempts} attempts`, e);
      return;
    }
    const later = this.waiting.get(user);
    const count = w.note.count + (later?.note.count ?? 0);
    const due = this.d.clock.now() + Math.min(5 * 60_000, this.d.push.retryBaseMs * 2 ** (attempts - 1));
    this.waiting.set(user, { note: { ...(later?.note ?? w.note), count }, attempts, due });
    this.d.scheduler.wakeAt(due);
  }
}
