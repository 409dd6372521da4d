import type { GroupEntry } from '../../protocol/index.js';
import type { Clock, Logger, Peers, Scheduler, Storage } from '../ports.js';
import type { PushSettings } from '../push.js';
import { GroupStore, type MemberRow } from './store.js';

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
 * send. A burst to a group of M offline members costs M calls per coalescing window, not M per message. A note
 * that fails is retried from the wake-up with the push backoff, up to IRIS_PUSH_MAX_ATTEMPTS calls.
 *
 * Restarts: the counts are in memory, but the log is the truth, so what is stored is a cursor, not the notes:
 * group_push.upto, "every message up to this seq was noted (or dropped)", written once the notes waiting are all
 * handed over (one row per coalescing window, none per message, none per member). A shard read again with
 * upto < head counts the messages after it again (at most RESUME_ENTRIES of the newest), for the members stored
 * offline, and notes them from its next wake-up. Members that were already told get told again (a push is a hint;
 * the receiver collapses on msg), and a member's shard skips a device whose group cursor is past the note's seq.
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
  storage: Storage;
  push: PushSettings;
}

/** Notes started per wake-up; the rest wait for the next one (asked for at once), like the fan-out's rounds. */
const NOTES_PER_WAKE = 256;
/** A shard read again notes at most this many of the newest entries past its cursor. */
const RESUME_ENTRIES = 1024;

interface Waiting {
  note: GroupPushNote;
  attempts: number;
  due: number;
  /** The lowest seq counted in it: the stored cursor stays below it until it is handed over. */
  first: number;
}

export class GroupPushNotes {
  private readonly waiting = new Map<string, Waiting>();
  /** Members whose note is in flight: what lands meanwhile waits for the next note. */
  private readonly flying = new Map<string, number>();
  private readonly store: GroupStore;
  /** The stored cursor (group_push.upto); null: no row yet. */
  private upto: number | null = null;
  /** The highest seq counted by landed(). */
  private counted = 0;
  /** Set by reset(): the entries after the stored cursor are counted again at the next wake-up (members loaded). */
  private resume: { after: number; head: number } | null = null;

  constructor(
    private readonly d: GroupPushNotesDeps,
    /** The group shard's memory: every membership range per user, and the members with a device connected. */
    private readonly ranges: Map<string, MemberRow[]>,
    private readonly online: Set<string>,
  ) {
    this.store = new GroupStore(d.storage.sql, d.group);
  }

  /** The group's shard was read again (FanOut.reset): memory is empty; what the stored cursor left is resumed. */
  reset(head: number): void {
    this.waiting.clear();
    this.counted = head;
    const row = this.d.storage.sql.all<{ upto: number }>(`SELECT upto FROM group_push WHERE grp = ?`, this.d.group)[0];
    this.upto = row?.upto ?? null;
    this.resume = row && row.upto < head ? { after: Math.max(row.upto, head - RESUME_ENTRIES), head } : null;
    if (this.resume) this.d.scheduler.wakeAt(this.d.clock.now());
  }

  /** After the commit of a fan-out round: its messages count for every current member that is offline, but their senders. */
  landed(entries: GroupEntry[], due = this.d.clock.now() + this.d.push.coalesceMs): void {
    const messages = entries.filter((e) => e.kind === 'message');
    if (messages.length === 0 || !this.d.peers.groupNote) return;
    this.counted = Math.max(this.counted, messages.at(-1)!.seq);
    // The group's first push ever: its cursor row, so that a restart inside this window resumes it.
    if (this.upto === null) this.saveUpto(messages[0]!.seq - 1);
    for (const [user, list] of this.ranges) {
      const r = list.at(-1)!;
      if (r.left_at !== 0 || this.online.has(user)) continue;
      let count = 0;
      let first = 0;
      let latest: GroupEntry | undefined;
      for (const e of messages) {
        if (e.from === user || e.seq < r.joined) continue;
        count++;
        first ||= e.seq;
        latest = e;
      }
      if (!latest) continue;
      const w = this.waiting.get(user);
      const note = { group: this.d.group, sender: latest.from, seq: latest.seq, ts: latest.ts, count: count + (w?.note.count ?? 0) };
      if (w) w.note = note;
      else {
        this.waiting.set(user, { note, attempts: 0, due, first });
        this.d.scheduler.wakeAt(due);
      }
    }
  }

  /** The group's wake-up: notes that are due leave; none is awaited. */
  wake(): void {
    const note = this.d.peers.groupNote;
    if (!note) return;
    const now = this.d.clock.now();
    if (this.resume) {
      const { after, head } = this.resume;
      this.resume = null;
      this.landed(this.store.range(after, head, RESUME_ENTRIES), now);
      this.advance(); // nothing to note (every member online): the cursor moves on
    }
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
      this.flying.set(user, w.first);
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
    this.advance();
  }

  /** The stored cursor moves to just below the oldest message not yet handed over (or to all counted). */
  private advance(): void {
    let floor = this.counted;
    for (const w of this.waiting.values()) floor = Math.min(floor, w.first - 1);
    for (const first of this.flying.values()) floor = Math.min(floor, first - 1);
    if (this.upto === null || floor > this.upto) this.saveUpto(floor);
  }

  private saveUpto(upto: number): void {
    this.upto = upto;
    this.d.storage
      .commit(() => this.d.storage.sql.all(`INSERT INTO group_push (grp, upto) VALUES (?, ?) ON CONFLICT (grp) DO UPDATE SET upto = max(upto, excluded.upto)`, this.d.group, upto))
      .catch((e: unknown) => this.d.log.log('warn', `group ${this.d.group}: push cursor not written`, e));
  }

  private failed(user: string, w: Waiting, e: unknown): void {
    this.flying.delete(user);
    const attempts = w.attempts + 1;
    if (attempts >= this.d.push.maxAttempts) {
      this.d.log.log('warn', `group ${this.d.group}: push note for ${user} dropped after ${attempts} attempts`, e);
      this.advance();
      return;
    }
    const later = this.waiting.get(user);
    const count = w.note.count + (later?.note.count ?? 0);
    const due = this.d.clock.now() + Math.min(5 * 60_000, this.d.push.retryBaseMs * 2 ** (attempts - 1));
    this.waiting.set(user, { note: { ...(later?.note ?? w.note), count }, attempts, due, first: w.first });
    this.d.scheduler.wakeAt(due);
  }
}
