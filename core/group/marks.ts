import type { Clock, Scheduler } from '../ports.js';
import type { GroupResult } from './types.js';

/** Delivered / read marks reach their groups at most this often per user: one round of calls, one call per group. */
export const REPORT_MS = 1_000;

/** Per group: how far the user's devices got and read, and how far the group was told. */
interface Mark {
  d: number;
  r: number;
  toldD: number;
  toldR: number;
}

export interface MarkDeps {
  clock: Clock;
  scheduler: Scheduler;
  /** The user's read-receipt setting (PROTOCOL.md 9.8): off, the group learns what was delivered, never what was read. */
  readReceiptsOn(): boolean;
  /** The `mark` call to the group's shard; null when it could not be reached. */
  send(group: string, delivered: number, read: number): Promise<GroupResult | null>;
}

/**
 * A member's coalesced delivered / read marks (PROTOCOL.md 9.11 "Receipts, aggregated"), leading and trailing edge.
 *
 * A mark that moves when nothing was reported in the last REPORT_MS is sent at once, from the ack that moved it
 * (leading edge); what moves after it within the window is sent by the shard's wake-up at the window's end
 * (trailing edge), which opens the next window. So a burst still costs at most one round per window, and a message
 * alone in its second costs one call instead of an alarm and a call (measured on Cloudflare: 3.05 billed requests
 * per online member per sparse group message, docs/BENCHMARKS.md "cf-rows-groups").
 *
 * Marks live in memory, as before: the group keeps the highest it was told (GroupShard.mark), so a late or repeated
 * call never moves a mark back, and a call that fails is sent again by the next wake-up, never at once in a loop.
 */
export class MarkReporter {
  private readonly marks = new Map<string, Mark>();
  /** When the trailing round is due (null: none waiting). */
  private reportAt: number | null = null;
  /** The window of the last round ends here: a mark that moves before it waits for the trailing round. */
  private quietUntil = 0;

  constructor(private readonly deps: MarkDeps) {}

  /** The user's devices got (read) this far. A promise when the mark went out at once (await it: the ack's work). */
  note(group: string, delivered: number, read: number): Promise<void> | undefined {
    const m = this.marks.get(group) ?? { d: 0, r: 0, toldD: 0, toldR: 0 };
    m.d = Math.max(m.d, delivered);
    if (read > m.r && this.deps.readReceiptsOn()) m.r = read;
    this.marks.set(group, m);
    if (m.d === m.toldD && m.r === m.toldR) return undefined;
    if (this.reportAt !== null) return undefined; // the trailing round takes it
    const now = this.deps.clock.now();
    if (now >= this.quietUntil) return this.report(now);
    this.reportAt = this.quietUntil;
    this.deps.scheduler.wakeAt(this.reportAt);
    return undefined;
  }

  /** The shard's wake-up: the trailing round, when due. */
  async tick(): Promise<void> {
    if (this.reportAt === null) return;
    const now = this.deps.clock.now();
    // Woken early for something else (a shard has one alarm, which keeps the earliest wake), or a failed call pushed
    // the window further since the alarm was asked for: ask again, so that rounds stay a window apart.
    this.reportAt = Math.max(this.reportAt, this.quietUntil);
    if (this.reportAt > now) return this.deps.scheduler.wakeAt(this.reportAt);
    this.reportAt = null;
    await this.report(now);
  }

  /** One call per group whose marks moved since last told; opens a new window. */
  private async report(now: number): Promise<void> {
    this.quietUntil = now + REPORT_MS;
    const work: Promise<void>[] = [];
    for (const [group, m] of this.marks) {
      if (m.d === m.toldD && m.r === m.toldR) continue;
      const d = m.d;
      const r = m.r;
      work.push(
        this.deps.send(group, d, r).then((res) => {
          if (res?.ok) {
            m.toldD = Math.max(m.toldD, d);
            m.toldR = Math.max(m.toldR, r);
          } else if (res === null) {
            // Unreachable: told again by a wake-up at least REPORT_MS from now, whatever the window says.
            this.quietUntil = Math.max(this.quietUntil, this.deps.clock.now() + REPORT_MS);
            void this.note(group, d, r);
          }
        }),
      );
    }
    await Promise.all(work);
  }
}
