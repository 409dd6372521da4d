import type { MailboxDeps } from './mailbox.js';
import { PeerOverloadedError, type CommitOptions, type ForwardBatch, type ForwardResult } from './ports.js';
import type { MailboxStore } from './store.js';

const LAZY: CommitOptions = { lazy: true };

/** Outbox items handed to a recipient per call. */
const FORWARD_BATCH = 64;
/**
 * A forward refused as overloaded (PeerOverloadedError) waits at least this many backoff steps: with the default
 * 250 ms base, ~4 s instead of 250 ms.
 */
const OVERLOADED_MIN_RETRIES = 5;

interface ForwardState {
  running: Promise<void> | null;
  again: boolean;
  attempt: number;
  retryAt: number;
  /** Trace id of the latest send towards this recipient (Conn.trace), carried by its batches for the logs. */
  trace?: string | undefined;
}

/** What the forwarder needs from its mailbox besides the deps: the store, its commits, and itself as a recipient. */
export interface ForwarderHost {
  readonly store: MailboxStore;
  tx<T>(fn: () => T, opts?: CommitOptions): Promise<T>;
  /** A message to oneself is handed over like any other, to this mailbox's own receive(). */
  receive(batch: ForwardBatch): Promise<ForwardResult>;
}

/**
 * The outbound half of a mailbox: drains the user's outbox, and the receipts it owes, towards each recipient's
 * shard (Peers.forward), in outbox order, which is what makes per-conversation order hold end to end. One run per
 * recipient at a time; a send arriving meanwhile sets `again`. A failed call is retried with jittered backoff
 * from a scheduled wake-up (the platform may drop the shard in between: nothing here is needed to resume, the
 * outbox is). A recipient whose inbox answered full is remembered until its retry-after, so new sends to it are
 * refused before they are acked.
 *
 * Created when the user first sends or wakes (most mailboxes in memory are idle and never need one).
 */
export class Forwarder {
  private readonly runs = new Map<string, ForwardState>();
  private readonly fullUntilMap = new Map<string, number>();

  constructor(
    private readonly deps: MailboxDeps,
    private readonly host: ForwarderHost,
  ) {}

  /** Until when `to` said its inbox is full (0: it did not, or that has passed). */
  fullUntil(to: string): number {
    return this.fullUntilMap.get(to) ?? 0;
  }

  /** `to`'s inbox is full until `at` (a one-hop hand-over was refused): sends wait, the outbox retries then. */
  markFull(to: string, at: number): void {
    this.fullUntilMap.set(to, at);
    this.state(to).retryAt = at;
    this.deps.scheduler.wakeAt(at);
  }

  /** Nothing of ours for `to` is queued or on its way: a new message may skip the outbox without overtaking any. */
  idleTowards(to: string): boolean {
    return !this.runs.get(to)?.running && this.fullUntil(to) <= this.deps.clock.now() && this.host.store.outboxFor(to, 1).length === 0;
  }

  /** Scheduled wake-up: retry every recipient that still has outbox items or owed receipts and is not backing off. */
  async wake(): Promise<void> {
    const now = this.deps.clock.now();
    const store = this.host.store;
    const work: Promise<void>[] = [];
    for (const r of new Set([...store.outboxRecipients(), ...store.owedPeers(), ...store.readOwedPeers()])) {
      const st = this.runs.get(r);
      if (st && st.retryAt > now) {
        this.deps.scheduler.wakeAt(st.retryAt);
        continue;
      }
      if (st) st.retryAt = 0;
      work.push(this.forward(r));
    }
    await Promise.all(work);
  }

  forward(recipient: string, trace?: string): Promise<void> {
    const st = this.state(recipient);
    if (trace !== undefined) st.trace = trace;
    if (st.running) {
      st.again = true;
      return st.running;
    }
    if (st.retryAt > this.deps.clock.now()) return Promise.resolve();
    st.running = this.run(recipient, st).finally(() => {
      st.running = null;
      // A forward() that arrived after the run's last outbox read but before this point only set `again`.
      if (st.again) void this.forward(recipient);
    });
    return st.running;
  }

  private state(recipient: string): ForwardState {
    let st = this.runs.get(recipient);
    if (!st) {
      st = { running: null, again: false, attempt: 0, retryAt: 0 };
      this.runs.set(recipient, st);
    }
    return st;
  }

  private async run(recipient: string, st: ForwardState): Promise<void> {
    const { peers, clock, scheduler, user } = this.deps;
    const { store } = this.host;
    try {
      for (;;) {
        st.again = false;
        const { items, receipt, read } = await this.host.tx(() => ({
          items: store.outboxFor(recipient, FORWARD_BATCH),
          receipt: store.owedTo(recipient),
          read: store.readOwedTo(recipient),
        }));
        if (items.length === 0 && receipt === undefined && read === undefined) {
          if (st.again) continue;
          return;
        }
        const batch: ForwardBatch = { from: user, items, ...(receipt && { receipt }), ...(read && { read }), ...(st.trace !== undefined && { trace: st.trace }) };
        const res = recipient === user ? await this.host.receive(batch) : await peers.forward(recipient, batch);
        if ((res.acceptedUpTo > 0 && items.length > 0) || receipt) {
          // Lazy: lost in a crash, the items are forwarded again and dropped by the recipient's per-sender dedup,
          // the receipt is sent again and merged as a maximum. In cluster mode this saves a log record per batch.
          await this.host.tx(() => {
            if (res.acceptedUpTo > 0 && items.length > 0) store.outboxDelete(recipient, res.acceptedUpTo);
            if (receipt) store.paid(recipient, receipt.n);
          }, LAZY);
        }
        // Memory only: the floor that says it reached the sender is written with the users row later.
        if (read) store.readPaid(recipient, read.n);
        st.attempt = 0;
        if (res.retryAfter !== undefined) {
          const at = clock.now() + res.retryAfter;
          this.fullUntilMap.set(recipient, at);
          st.retryAt = at;
          scheduler.wakeAt(at);
          return;
        }
        this.fullUntilMap.delete(recipient);
        // A short batch drained the outbox as of its read; only a send since then (again) needs another look.
        if (items.length < FORWARD_BATCH && !st.again) return;
      }
    } catch (e) {
      this.backOff(recipient, st, e);
    }
  }

  private backOff(recipient: string, st: ForwardState, e: unknown): void {
    const { config, clock } = this.deps;
    st.attempt++;
    if (e instanceof PeerOverloadedError) st.attempt = Math.max(st.attempt, OVERLOADED_MIN_RETRIES);
    const ceiling = Math.min(config.retryMaxMs, config.retryBaseMs * 2 ** Math.min(st.attempt - 1, 20));
    // Half fixed, half random: shards that failed together (their recipients' worker restarting) do not retry
    // together, and none retries sooner than half its step.
    const delay = Math.round(ceiling / 2 + (ceiling / 2) * (this.deps.random ?? Math.random)());
    st.retryAt = clock.now() + delay;
    this.deps.scheduler.wakeAt(st.retryAt);
    this.deps.metrics?.forwardFailed?.();
    this.deps.log.log('warn', `forward ${this.deps.user} -> ${recipient} failed (attempt ${st.attempt}, retry in ${delay} ms)`, e, { user: this.deps.user, ...(st.trace !== undefined && { trace: st.trace }) });
  }
}
