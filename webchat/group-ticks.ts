/**
 * ✓✓ and read on the group messages this user sent. A group keeps how far each member's devices got and read
 * (PROTOCOL.md 9.11 "Receipts, aggregated") and tells the sender when asked (`group_receipts_query`), never by
 * itself, so the page asks: about its newest own message of a group that is not read by everyone yet, about a
 * second after something happened there (the marks reach the group up to a second after the acks that made
 * them), then less and less often (doubling up to 15 s) while nothing moves. A mark is cumulative per member
 * (delivered or read up to a seq), so the answer about the newest message holds for the older ones too.
 * ✓✓ once every member who may see it has it on a device, read once every one of them read it.
 */
import type { GroupReceiptsResult, IrisClient, IrisError } from '../client/index.js';
import type { History, Tick } from './history.js';

const FIRST_MS = 1200;
const MAX_MS = 15_000;

/** The tick of a message from its members' marks: the least advanced one. None (the sender alone): ✓. */
export function groupTick(r: Pick<GroupReceiptsResult, 'members'>): Tick {
  if (r.members.length === 0) return 'sent';
  if (r.members.every((m) => m.state === 'read')) return 'read';
  if (r.members.every((m) => m.state !== 'sent')) return 'delivered';
  return 'sent';
}

export class GroupTicks {
  private readonly timers = new Map<string, { timer: ReturnType<typeof setTimeout>; delay: number }>();

  constructor(
    private readonly client: IrisClient,
    private readonly history: History,
    private readonly changed: () => void,
  ) {}

  /** Something happened in `group` (an own send acked, a member wrote): ask again soon. */
  kick(group: string): void {
    this.schedule(group, FIRST_MS);
  }

  /** Every group with an own message not read by all (after a (re)connect: the marks may have moved meanwhile). */
  kickAll(): void {
    for (const c of this.history.convs.values()) if (c.kind === 'group' && this.newest(c.id) !== null) this.kick(c.id);
  }

  private schedule(group: string, delay: number): void {
    const t = this.timers.get(group);
    if (t) clearTimeout(t.timer);
    this.timers.set(group, { delay, timer: setTimeout(() => void this.ask(group, delay), delay) });
  }

  /** The seq of the newest own message of `group` that is acked and not read by everyone, or null. */
  private newest(group: string): number | null {
    const c = this.history.convs.get(group);
    const me = this.history.me;
    const m = c?.msgs.findLast((x) => x.from === me && !x.system && x.seq !== undefined);
    return m && m.tick !== 'read' ? m.seq! : null;
  }

  private async ask(group: string, delay: number): Promise<void> {
    this.timers.delete(group);
    const seq = this.newest(group);
    if (seq === null) return;
    if (this.client.state !== 'open') return; // kickAll on the next open
    try {
      const r = await this.client.groupReceipts(group, seq);
      const before = this.history.convs.get(group)?.msgs.find((m) => m.seq === seq)?.tick;
      const tick = groupTick(r);
      this.history.groupReceipt(group, seq, tick);
      if (tick !== before) this.changed();
      if (tick !== 'read') this.schedule(group, tick !== before ? FIRST_MS : Math.min(delay * 2, MAX_MS));
    } catch (e) {
      // bad_state: no longer kept (or this user left); closed: the page is going. Anything else: later.
      const code = (e as IrisError).code;
      if (code !== 'bad_state' && code !== 'not_member' && code !== 'closed') this.schedule(group, Math.min(delay * 2, MAX_MS));
    }
  }
}
