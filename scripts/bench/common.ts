/**
 * Shared pieces of the load generator: the common clock, the message body layout, a growable bit set for
 * message accounting, HDR histogram helpers and the messages between the coordinator and its client processes.
 */
import * as hdr from 'hdr-histogram-js';

// ------------------------------------------------------------------ clock

/**
 * Wall-clock milliseconds with sub-millisecond resolution. Every process of one run uses it, so a timestamp
 * written into a body by a sender in one process can be compared with the time a receiver in another process
 * sees it (same machine, same CLOCK_REALTIME at process start; the difference is a few microseconds).
 */
const ORIGIN = performance.timeOrigin;
export function now(): number {
  return ORIGIN + performance.now();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

// ------------------------------------------------------------------ message body

/**
 * Every message body starts with a 16-byte header the receiver reads back:
 *   u32 LE sender connection index (global), u32 LE per-sender sequence number, f64 LE scheduled send time
 * The rest is filler up to --size bytes. The header is what makes every message accountable (lost, duplicated)
 * and what the send->deliver latency is measured from (the SCHEDULED time, so a late sender does not hide
 * latency: no coordinated omission).
 */
export const BODY_HEADER = 16;

const f64 = new Float64Array(1);
const f64b = new Uint8Array(f64.buffer);

export function writeHeader(b: Uint8Array, off: number, sender: number, seq: number, sched: number): void {
  b[off] = sender & 0xff;
  b[off + 1] = (sender >>> 8) & 0xff;
  b[off + 2] = (sender >>> 16) & 0xff;
  b[off + 3] = (sender >>> 24) & 0xff;
  b[off + 4] = seq & 0xff;
  b[off + 5] = (seq >>> 8) & 0xff;
  b[off + 6] = (seq >>> 16) & 0xff;
  b[off + 7] = (seq >>> 24) & 0xff;
  f64[0] = sched;
  b.set(f64b, off + 8);
}

export function readU32(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

export function readF64(b: Uint8Array, off: number): number {
  for (let i = 0; i < 8; i++) f64b[i] = b[off + i]!;
  return f64[0]!;
}

// ------------------------------------------------------------------ bit set

/** Growable bit set over non-negative integers: which sequence numbers of one sender were acked / delivered. */
export class BitSet {
  bytes: Uint8Array;
  count = 0;
  constructor(initialBits = 1024) {
    this.bytes = new Uint8Array(Math.max(8, initialBits >>> 3));
  }
  static from(bytes: Uint8Array): BitSet {
    const s = new BitSet(8);
    s.bytes = bytes;
    s.count = popcount(bytes);
    return s;
  }
  /** Sets bit i; returns false if it was already set. */
  add(i: number): boolean {
    const byte = i >>> 3;
    if (byte >= this.bytes.length) {
      let n = this.bytes.length * 2;
      while (n <= byte) n *= 2;
      const next = new Uint8Array(n);
      next.set(this.bytes);
      this.bytes = next;
    }
    const mask = 1 << (i & 7);
    const b = this.bytes[byte]!;
    if (b & mask) return false;
    this.bytes[byte] = b | mask;
    this.count++;
    return true;
  }
  has(i: number): boolean {
    const byte = i >>> 3;
    return byte < this.bytes.length && (this.bytes[byte]! & (1 << (i & 7))) !== 0;
  }
  /** The used prefix only, for shipping to the coordinator. */
  compact(): Uint8Array {
    let end = this.bytes.length;
    while (end > 0 && this.bytes[end - 1] === 0) end--;
    return this.bytes.slice(0, end);
  }
}

const POP = new Uint8Array(256);
for (let i = 0; i < 256; i++) POP[i] = (i & 1) + POP[i >> 1]!;

export function popcount(b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < b.length; i++) n += POP[b[i]!]!;
  return n;
}

/** Bits set in a and not in b. */
export function andNotCount(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) n += POP[a[i]! & ~(i < b.length ? b[i]! : 0) & 0xff]!;
  return n;
}

/** Bits set in either (into a new array). */
export function or(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.max(a.length, b.length));
  out.set(a);
  for (let i = 0; i < b.length; i++) out[i] = out[i]! | b[i]!;
  return out;
}

/** Bits 0..n-1 set: the expected set of a sender whose every send counts (the raw relay has no acks). */
export function prefixBits(n: number): Uint8Array {
  const out = new Uint8Array(Math.ceil(n / 8));
  out.fill(0xff, 0, n >>> 3);
  if (n & 7) out[n >>> 3] = (1 << (n & 7)) - 1;
  return out;
}

// ------------------------------------------------------------------ histograms

/** Latencies are recorded in microseconds, 1 us .. 10 min, 3 significant digits. */
export function newHist(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3, autoResize: true });
}

export function recordUs(h: hdr.Histogram, ms: number): void {
  const us = Math.round(ms * 1000);
  h.recordValue(us < 1 ? 1 : us > 600_000_000 ? 600_000_000 : us);
}

export function encodeHist(h: hdr.Histogram): string {
  return h.totalCount === 0 ? '' : hdr.encodeIntoCompressedBase64(h);
}

export function mergeHists(encoded: string[]): hdr.Histogram {
  const out = newHist();
  for (const e of encoded) if (e !== '') out.add(hdr.decodeFromCompressedBase64(e));
  return out;
}

export interface LatencySummary {
  count: number;
  /** Milliseconds. */
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export function summarize(h: hdr.Histogram): LatencySummary {
  const ms = (us: number) => Math.round(us) / 1000;
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: Math.round(h.mean) / 1000,
  };
}

/** Percentile curve points [percentile, ms] for the plot, from 0 to the highest percentile the count supports. */
export function percentileCurve(h: hdr.Histogram): [number, number][] {
  const pts: [number, number][] = [];
  if (h.totalCount === 0) return pts;
  const maxNines = Math.max(1, Math.min(6, Math.log10(h.totalCount)));
  for (let x = 0; x <= maxNines + 1e-9; x += 0.05) {
    const p = 100 * (1 - 10 ** -x);
    pts.push([p, h.getValueAtPercentile(p) / 1000]);
  }
  // The maximum sits at the highest percentile the count resolves.
  pts.push([100 * (1 - 10 ** -maxNines), h.maxValue / 1000]);
  return pts;
}

// ------------------------------------------------------------------ coordinator <-> client processes

/** How a client speaks to its target. iris: protocol v1 binary frames. relay / echo: [u32 dest][body] bytes. */
export type Wire = 'iris' | 'relay' | 'echo';

export interface ConnSpec {
  /** Global connection index; also the sender id inside bodies. */
  idx: number;
  /** Iris user id (iris wire). */
  user: string;
  /** Connection index this one sends to, or -1 if it only receives. */
  to: number;
  /** Iris user id of `to`. */
  toUser: string;
  /** Room (echo wire: which Durable Object both ends share). */
  room: number;
  localAddress: string | null;
}

export interface InitMsg {
  t: 'init';
  proc: number;
  wire: Wire;
  /** Iris: the /v1/connect URL; relay: ws://host:port (the client appends /c/<idx>); echo: the /bench/echo URL. */
  url: string;
  secret: string;
  bodyBytes: number;
  connectConcurrency: number;
  connectTimeoutMs: number;
  conns: ConnSpec[];
  /**
   * Iris only: reconnect a connection that drops mid-run and resume on it (the worker-kill mode). Off for the
   * other runs, where a dropped connection is a fault to report, not something to recover from.
   */
  reconnect: boolean;
}

export interface PhaseMsg {
  t: 'phase';
  phase: number;
  /** This process's share of the offered rate, messages per second. */
  rate: number;
  /** Common-clock ms: schedule origin, start of measurement, end of sending. */
  t0: number;
  measureFrom: number;
  end: number;
  /** Abort sending in this phase when this many sends wait for their ack (per process). */
  maxInflight: number;
  /**
   * Common-clock ms at which the coordinator SIGKILLs a server worker (kill mode), or null. Each client
   * process takes its accounting snapshot on its own timer at that instant, so the "in flight at the kill"
   * figures need no round trip after the kill.
   */
  killAt: number | null;
  /** Kill mode: connection indices whose user the killed worker owns (deliveries between others are counted apart). */
  affected: number[];
}

export type ToClient =
  | InitMsg
  | PhaseMsg
  | { t: 'stop_sending' }
  | { t: 'collect'; phase: number }
  | { t: 'account' }
  | { t: 'close' };

export interface Bucket {
  /** Second index since the phase's t0 (by event time). */
  sec: number;
  sent: number;
  acked: number;
  delivered: number;
  /** Kill mode: delivered between two connections the killed worker does not own. */
  deliveredUnaffected: number;
  errors: number;
  deliverHist: string;
}

export interface Totals {
  sent: number;
  acked: number;
  errored: number;
  /** Sent, neither acked nor refused yet (iris). */
  pending: number;
  deliveredUnique: number;
  duplicates: number;
  receipts: number;
  closed: number;
  /** Connections ready (hello answered) so far. */
  opened: number;
}

export interface PhaseResult {
  phase: number;
  /** Messages scheduled inside the measurement window, and of those: sent, acked, delivered, refused. */
  scheduled: number;
  sent: number;
  acked: number;
  delivered: number;
  errored: number;
  /** Deliveries whose receive time falls inside the window (throughput by arrival). */
  deliveredInWindow: number;
  ackHist: string;
  deliverHist: string;
  /** How late the generator itself sent (actual - scheduled). */
  lagHist: string;
  errors: Record<string, number>;
  overloaded: boolean;
}

export interface SenderAccount {
  idx: number;
  sent: number;
  /** Acked sequence numbers (iris); null when every send is expected to arrive (raw relay, echo). */
  acked: Uint8Array | null;
  errored: number;
  pending: number;
}

/** What one client process saw of dropped connections and their recovery (kill mode). Times: common clock ms. */
export interface ReconnectStats {
  /** Connection indices that dropped after they were ready (closed by the server or the socket died). */
  dropped: number[];
  /** Connections that got a welcome again after dropping. */
  reconnected: number;
  /** Connections still down when the numbers were taken. */
  down: number[];
  firstDropAt: number | null;
  /** First and last welcome on a reconnected connection. */
  firstWelcomeAt: number | null;
  lastWelcomeAt: number | null;
  /** First deliver frame and first send_ack received on a connection after it reconnected. */
  firstDeliverAt: number | null;
  firstAckAt: number | null;
  /** Unacked sends written again, with the same client id, after a reconnect. */
  resent: number;
  /** Messages scheduled while their connection was down: kept in the client's outbox, written after the reconnect. */
  queued: number;
  /** Failed reconnect attempts, by cause (a 503 while the worker restarts is expected). */
  attempts: Record<string, number>;
  /** Entries with seq <= the connection's cursor: the protocol says the client drops them; the server should not send them. */
  stale: number;
}

export interface AccountMsg {
  senders: SenderAccount[];
  /** Per sender index: delivered sequence numbers seen by this process. */
  delivered: { sender: number; bits: Uint8Array }[];
  duplicates: number;
  receipts: number;
  recovery: ReconnectStats;
}

export type FromClient =
  | { t: 'opened'; proc: number; ok: number; failed: number; errors: Record<string, number>; retried: Record<string, number>; ms: number; dead: number[] }
  | { t: 'tick'; proc: number; phase: number; buckets: Bucket[]; totals: Totals; errors: Record<string, number> }
  | { t: 'phase_result'; proc: number; result: PhaseResult }
  | { t: 'account'; proc: number; account: AccountMsg }
  /** The accounting at PhaseMsg.killAt (kill mode); `at` is when the client's timer actually fired. */
  | { t: 'snapshot'; proc: number; at: number; account: AccountMsg }
  | { t: 'fatal'; proc: number; message: string };
