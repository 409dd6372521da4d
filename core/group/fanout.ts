import type { GroupEntry } from '../../protocol/index.js';
import type { Peers } from '../ports.js';
import type { GroupPushNotes } from './push-notes.js';

/** The group shard builds the notes the fan-out drives, with the fan-out (core/group/push-notes.ts). */
export { GroupPushNotes } from './push-notes.js';
import type { GroupPush, Ranges } from './types.js';

/** Entries per push call (ARCHITECTURE.md "Groups": --fanout-batch). */
export const FANOUT_BATCH = 64;

export interface FanOutDeps {
  group: string;
  peers: Peers;
  /** Current members whose shard has a device connected (the group shard's set: this removes members from it). */
  online: Set<string>;
  rangesOf(user: string): Ranges;
  /** Whether the user's last range is still open (it is a member). */
  isMember(user: string): boolean;
  /** A push failed: ask for a wake-up, from which onWake() nudges the members behind. */
  retryLater(): void;
  /** Push webhooks for the members that are offline (core/group/push-notes.ts); absent while IRIS_PUSH_URL is unset. */
  notes?: GroupPushNotes | undefined;
}

/**
 * A group's fan-out (design B): committed entries go out in rounds of at most FANOUT_BATCH, one push call per
 * online member shard per round. A member shard has at most one call in flight: a member still busy with an
 * earlier round is marked behind and, once its call returns, nudged (an empty push at the head) to pull what it
 * missed; a call that fails just marks it behind. The log is the truth, a push a hint: nothing here awaits a member.
 */
export class FanOut {
  /** Entries appended and not yet pushed, oldest first; `committed` is how far their commits resolved. */
  private pending: GroupEntry[] = [];
  private committed = 0;
  private fanned = 0;
  private readonly inflight = new Set<string>();
  private readonly behind = new Set<string>();

  constructor(private readonly d: FanOutDeps) {}

  /** Everything up to `head` is committed and was pushed (a shard read again from storage). */
  reset(head: number): void {
    this.pending = [];
    this.committed = this.fanned = head;
    this.d.notes?.reset(head);
  }

  /** An entry appended in a commit that has not resolved yet. */
  appended(e: GroupEntry): void {
    this.pending.push(e);
  }

  /** The commit holding every entry up to `seq` resolved: push what it made durable. */
  committedUpTo(seq: number): void {
    this.committed = Math.max(this.committed, seq);
    while (this.pending.length > 0 && this.pending[0]!.seq <= this.committed) {
      let n = 0;
      while (n < this.pending.length && n < FANOUT_BATCH && this.pending[n]!.seq <= this.committed) n++;
      const entries = this.pending.slice(0, n);
      this.pending = this.pending.slice(n);
      const after = this.fanned;
      const upTo = entries.at(-1)!.seq;
      this.fanned = upTo;
      const targets = [];
      for (const u of this.d.online) {
        if (this.inflight.has(u)) this.behind.add(u);
        else targets.push({ user: u, ranges: this.d.rangesOf(u) });
        // Removed in this round: it gets this round (it learns of its removal), and nothing after it.
        if (!this.d.isMember(u)) this.d.online.delete(u);
      }
      if (targets.length > 0) this.push({ group: this.d.group, after, upTo, entries, targets });
      // Members this round does not reach are offline: they are counted for a push instead.
      this.d.notes?.landed(entries);
    }
  }

  /** The wake-up: members behind and not busy are nudged. */
  wake(): void {
    for (const u of [...this.behind]) if (!this.inflight.has(u)) this.nudge(u);
    this.d.notes?.wake();
  }

  private push(p: GroupPush): void {
    const calls = this.d.peers.groupPush?.(p) ?? p.targets.map(() => Promise.reject(new Error('no groupPush')));
    p.targets.forEach((t, i) => {
      this.inflight.add(t.user);
      calls[i]!.then(
        (wanted) => this.pushed(t.user, wanted),
        () => this.pushFailed(t.user),
      );
    });
  }

  private pushed(user: string, wanted: boolean): void {
    this.inflight.delete(user);
    if (!wanted) {
      // No device there any more: it is offline until its shard watches again (its hello pulls what it missed).
      this.d.online.delete(user);
      this.behind.delete(user);
      return;
    }
    if (this.behind.delete(user)) this.nudge(user);
  }

  private pushFailed(user: string): void {
    this.inflight.delete(user);
    this.behind.add(user);
    this.d.retryLater();
  }

  /** An empty push at the head: the member's devices that are behind pull what they missed. */
  private nudge(user: string): void {
    if (!this.d.online.has(user)) {
      this.behind.delete(user);
      return;
    }
    this.push({ group: this.d.group, after: this.fanned, upTo: this.fanned, entries: [], targets: [{ user, ranges: this.d.rangesOf(user) }] });
  }
}
