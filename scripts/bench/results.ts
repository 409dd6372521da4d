/**
 * What a load run is asked to do (LoadSpec) and what it found (LoadResult and its parts): the shapes
 * scripts/bench/report.ts, kill.ts and the tests read. coordinator.ts re-exports them.
 */
import type { LatencySummary, Wire } from './common.js';
import type { KillResult, KillSpec } from './kill.js';
import type { MaxSearch, Mode, Pattern } from './options.js';
import type { ProcMem } from './servers.js';

export interface LoadSpec extends MaxSearch {
  label: string;
  wire: Wire;
  url: string;
  secret: string;
  pattern: Pattern;
  mode: Mode;
  connections: number;
  processes: number;
  /** Source addresses, or [] for the default (the kernel's choice, 127.0.0.1). */
  sourceAddresses: string[];
  bodyBytes: number;
  rate: number;
  warmupMs: number;
  durationMs: number;
  drainMs: number;
  settleMs: number;
  connectConcurrency: number;
  maxInflight: number;
  serverPid: number | null;
  quiet: boolean;
  /** node --cpu-prof of the client processes into <dir>/clients. */
  profileDir: string | null;
  /** Worker-kill mode (fixed mode only): clients reconnect and resume, and one worker is SIGKILLed mid-window. */
  kill: KillSpec | null;
}

export interface PhaseSummary {
  phase: number;
  /** Requested offered rate, msg/s. */
  rate: number;
  /** Offered (scheduled), sent and delivered (by arrival) inside the measurement window, msg/s. */
  offeredRate: number;
  sentRate: number;
  deliveredRate: number;
  scheduled: number;
  sent: number;
  acked: number;
  delivered: number;
  errored: number;
  /** Of the messages sent in the window: share delivered by the end of the drain. */
  completion: number;
  ack: LatencySummary | null;
  deliver: LatencySummary;
  /** How late the generator sent, against the schedule. */
  lag: LatencySummary;
  errors: Record<string, number>;
  overloaded: boolean;
  drained: boolean;
  drainMs: number;
  cpu: { serverCores: number | null; clientCores: number };
  pass: boolean | null;
  reasons: string[];
  deliverHist: string;
  ackHist: string;
}

export interface TimelinePoint {
  /** Seconds since the first phase started. */
  t: number;
  phase: number;
  offered: number;
  sent: number;
  acked: number;
  delivered: number;
  /** Kill mode: delivered between connections the killed worker does not own. */
  deliveredUnaffected: number;
  errors: number;
  p50: number;
  p99: number;
}

export interface Accounting {
  sent: number;
  acked: number;
  errored: number;
  /** Sent and never answered (no ack, no error) by the end. */
  unanswered: number;
  delivered: number;
  lost: number;
  duplicated: number;
  deliveredNotAcked: number;
  receipts: number;
  closedConnections: number;
}

export interface MemoryResult {
  connections: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  perConnectionKiB: number;
  processes: ProcMem[];
}

export interface LoadResult {
  label: string;
  wire: Wire;
  mode: Mode;
  pattern: Pattern;
  connections: number;
  processes: number;
  sourceAddresses: string[];
  /** errors: why connections finally failed; retried: every failed attempt (a retry may have fixed it). */
  opened: { ok: number; failed: number; errors: Record<string, number>; retried: Record<string, number>; ms: number };
  phases: PhaseSummary[];
  /** Max mode: the highest passing step. */
  /** capped: every step passed up to --max-rate, so the real maximum is higher. */
  max: { rate: number; deliveredRate: number; phase: number; capped: boolean } | null;
  timeline: TimelinePoint[];
  accounting: Accounting | null;
  memory: MemoryResult | null;
  /** Worker-kill mode: what was killed, what was in flight, how long the recovery took. */
  kill: KillResult | null;
  errors: Record<string, number>;
}
