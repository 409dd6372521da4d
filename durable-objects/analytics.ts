import type { Metrics } from '../core/ports.js';
import type { ErrorCode } from '../protocol/index.js';

/**
 * The Cloudflare profile's counters and histograms, written to Workers Analytics Engine (the METRICS binding,
 * wrangler.toml `[[analytics_engine_datasets]]`; docs/OPERATIONS.md "Metrics and dashboards" has the queries).
 *
 * Cost: a data point is written per event class per flush, never per message. A shard counts in memory and
 * flushes FLUSH_MS after the first event since its last flush: one `shard` point with every counter as a
 * double, plus one `error` point per error code seen. A busy shard writes at most ~1 + codes points a second,
 * an idle one none; the 1 s timer fits inside the ~10 s the runtime keeps an object in memory after an event,
 * so it does not keep a hibernatable object awake longer. The edge Worker writes one `edge` point per upgrade
 * request (one per connection, not per message: messages never pass through the edge).
 *
 * Layout (positions are what the SQL API names blob1.., double1.., index1):
 *   shard: index1 user, blob1 'shard', blob2 '', doubles SHARD_DOUBLES (in that order)
 *   error: index1 user, blob1 'error', blob2 the error code, double1 frames sent with it
 *   edge:  index1 the outcome, blob1 'edge', blob2 the outcome ('upgrade' or the refusal code), double1 1, double2 ms
 * Analytics Engine samples under load: weight by _sample_interval (SUM(_sample_interval * double1)).
 */

/** What a shard's `shard` data point holds, double1.. in this order. */
export const SHARD_DOUBLES = [
  'accepted', // messages accepted (durable, send_ack sent), duplicates excluded
  'delivered', // inbox entries pushed to devices
  'acked', // deliver_acks that moved a cursor
  'errors', // error frames sent, all codes (the `error` points split them)
  'forwardFailures', // failed forwards to a recipient shard (retried with backoff)
  'framesIn', // WebSocket messages received
  'framesOut', // frames handed to send()
  'upgrades', // WebSockets accepted
  'handlers', // event handlers run (the histogram's count)
  'handlerMsSum', // their wall time, ms (the histogram's sum; a lower bound, see durable-objects/stats.ts)
  'handlerMsMax', // the longest of them, ms
  'rowsRead', // SQL rows read
  'rowsWritten', // SQL rows written
  'sockets', // open sockets at the flush (a gauge)
] as const;

export type ShardCounter = (typeof SHARD_DOUBLES)[number];

/** Flush delay after the first event since the last flush. */
export const FLUSH_MS = 1_000;

/** Counters the shard keeps anyway (durable-objects/stats.ts): read as deltas at each flush. */
export interface ShardTotals {
  wsIn: number;
  wsOut: number;
  upgrades: number;
  sql: { rowsRead: number; rowsWritten: number };
}

export class ShardAnalytics {
  private counts = zero();
  private readonly errorCodes = new Map<string, number>();
  private last: { wsIn: number; wsOut: number; upgrades: number; rowsRead: number; rowsWritten: number };
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Data points written since construction (tests and stats). */
  written = 0;

  constructor(
    /** The binding; absent (a config without it) means nothing is written. Replaceable by tests. */
    public dataset: AnalyticsEngineDataset | undefined,
    private readonly totals: ShardTotals,
    private readonly user: () => string | undefined,
    private readonly sockets: () => number,
  ) {
    this.last = snapshot(totals);
  }

  /** The core's metrics port. */
  core(): Metrics {
    return {
      accepted: () => void this.counts.accepted++,
      delivered: (n) => void (this.counts.delivered += n),
      acked: () => void this.counts.acked++,
      error: (code: ErrorCode) => {
        this.counts.errors++;
        this.errorCodes.set(code, (this.errorCodes.get(code) ?? 0) + 1);
      },
      forwardFailed: () => void this.counts.forwardFailures++,
    };
  }

  /** An event handler ran for `ms`: the histogram, and the flush timer armed if it is not. */
  handler(ms: number): void {
    this.counts.handlers++;
    this.counts.handlerMsSum += ms;
    if (ms > this.counts.handlerMsMax) this.counts.handlerMsMax = ms;
    if (this.timer === null && this.dataset) this.timer = setTimeout(() => this.flush(), FLUSH_MS);
  }

  /** Writes what was counted since the last flush (nothing when nothing happened). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const now = snapshot(this.totals);
    const c = this.counts;
    c.framesIn = now.wsIn - this.last.wsIn;
    c.framesOut = now.wsOut - this.last.wsOut;
    c.upgrades = now.upgrades - this.last.upgrades;
    c.rowsRead = now.rowsRead - this.last.rowsRead;
    c.rowsWritten = now.rowsWritten - this.last.rowsWritten;
    this.last = now;
    this.counts = zero();
    const user = this.user() ?? '';
    const ds = this.dataset;
    if (!ds || SHARD_DOUBLES.every((k) => k === 'sockets' || c[k] === 0)) return;
    c.sockets = this.sockets();
    ds.writeDataPoint({ indexes: [user], blobs: ['shard', ''], doubles: SHARD_DOUBLES.map((k) => c[k]) });
    this.written++;
    for (const [code, n] of this.errorCodes) {
      ds.writeDataPoint({ indexes: [user], blobs: ['error', code], doubles: [n] });
      this.written++;
    }
    this.errorCodes.clear();
  }
}

/** The edge Worker's point for one upgrade request: its outcome and how long the edge took. */
export function edgePoint(ds: AnalyticsEngineDataset | undefined, outcome: string, ms: number): void {
  ds?.writeDataPoint({ indexes: [outcome], blobs: ['edge', outcome], doubles: [1, ms] });
}

function zero(): Record<ShardCounter, number> {
  return Object.fromEntries(SHARD_DOUBLES.map((k) => [k, 0])) as Record<ShardCounter, number>;
}

function snapshot(t: ShardTotals): { wsIn: number; wsOut: number; upgrades: number; rowsRead: number; rowsWritten: number } {
  return { wsIn: t.wsIn, wsOut: t.wsOut, upgrades: t.upgrades, rowsRead: t.sql.rowsRead, rowsWritten: t.sql.rowsWritten };
}
