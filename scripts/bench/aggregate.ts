/**
 * Pure arithmetic over what the client processes report: one phase's summary (rates, latency histograms, CPU)
 * and the run's message accounting (lost, duplicated, unanswered) from every sender's bit sets.
 */
import { andNotCount, encodeHist, mergeHists, or, popcount, prefixBits, summarize, type AccountMsg, type PhaseResult } from './common.js';
import type { Accounting, LoadSpec, PhaseSummary } from './results.js';

/** CPU seconds of the server and of the client processes at one instant. */
export interface CpuMark {
  s: number | null;
  c: number;
  t: number;
}

export function sumErrors(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

export const fmt = (n: number) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));

export function summarizePhase(
  n: number,
  rate: number,
  durationMs: number,
  results: PhaseResult[],
  drained: boolean,
  drainMs: number,
  cpu0: CpuMark | null,
  cpu1: CpuMark | null,
): PhaseSummary {
  const sec = durationMs / 1000;
  const sum = (f: (r: PhaseResult) => number) => results.reduce((a, r) => a + f(r), 0);
  const errors: Record<string, number> = {};
  for (const r of results) sumErrors(errors, r.errors);
  const ackHist = mergeHists(results.map((r) => r.ackHist));
  const deliverHist = mergeHists(results.map((r) => r.deliverHist));
  const lagHist = mergeHists(results.map((r) => r.lagHist));
  const sent = sum((r) => r.sent);
  const delivered = sum((r) => r.delivered);
  let cpu: PhaseSummary['cpu'] = { serverCores: null, clientCores: 0 };
  if (cpu0 && cpu1) {
    const a = cpu0;
    const b = cpu1;
    const wall = (b.t - a.t) / 1000;
    cpu = {
      serverCores: a.s !== null && b.s !== null ? Math.round(((b.s - a.s) / wall) * 100) / 100 : null,
      clientCores: Math.round(((b.c - a.c) / wall) * 100) / 100,
    };
  }
  return {
    phase: n,
    rate,
    offeredRate: Math.round(sum((r) => r.scheduled) / sec),
    sentRate: Math.round(sent / sec),
    deliveredRate: Math.round(sum((r) => r.deliveredInWindow) / sec),
    scheduled: sum((r) => r.scheduled),
    sent,
    acked: sum((r) => r.acked),
    delivered,
    errored: sum((r) => r.errored),
    completion: sent - sum((r) => r.errored) > 0 ? delivered / (sent - sum((r) => r.errored)) : 1,
    ack: ackHist.totalCount > 0 ? summarize(ackHist) : null,
    deliver: summarize(deliverHist),
    lag: summarize(lagHist),
    errors,
    overloaded: results.some((r) => r.overloaded),
    drained,
    drainMs,
    cpu,
    pass: null,
    reasons: [],
    deliverHist: encodeHist(deliverHist),
    ackHist: encodeHist(ackHist),
  };
}

export function account(accounts: AccountMsg[], closed: number): Accounting {
  const delivered = new Map<number, Uint8Array>();
  let crossDup = 0;
  for (const a of accounts) {
    for (const d of a.delivered) {
      const prev = delivered.get(d.sender);
      if (prev) {
        const merged = or(prev, d.bits);
        crossDup += popcount(prev) + popcount(d.bits) - popcount(merged);
        delivered.set(d.sender, merged);
      } else delivered.set(d.sender, d.bits);
    }
  }
  const out: Accounting = { sent: 0, acked: 0, errored: 0, unanswered: 0, delivered: 0, lost: 0, duplicated: crossDup, deliveredNotAcked: 0, receipts: 0, closedConnections: closed };
  const empty = new Uint8Array(0);
  for (const a of accounts) {
    out.duplicated += a.duplicates;
    out.receipts += a.receipts;
    for (const s of a.senders) {
      const expected = s.acked ?? prefixBits(s.sent);
      const got = delivered.get(s.idx) ?? empty;
      out.sent += s.sent;
      out.acked += popcount(expected);
      out.errored += s.errored;
      out.unanswered += s.pending;
      out.lost += andNotCount(expected, got);
      out.deliveredNotAcked += andNotCount(got, expected);
    }
  }
  for (const bits of delivered.values()) out.delivered += popcount(bits);
  return out;
}

/** Whether a search step passed, and why not (into s.pass / s.reasons). */
export function judge(s: PhaseSummary, spec: LoadSpec): boolean {
  const r: string[] = [];
  if (s.deliveredRate < spec.track * s.offeredRate) r.push(`delivered ${fmt(s.deliveredRate)}/s < ${spec.track} x offered ${fmt(s.offeredRate)}/s`);
  if (s.deliver.p99 > spec.maxP99Ms) r.push(`p99 ${s.deliver.p99} ms > ${spec.maxP99Ms} ms`);
  if (s.errored > 0.001 * Math.max(1, s.sent)) r.push(`${s.errored} sends refused`);
  if (s.overloaded) r.push('generator in-flight cap hit');
  if (!s.drained) r.push('backlog not drained');
  if (s.completion < 0.999) r.push(`only ${(s.completion * 100).toFixed(2)}% delivered`);
  // Not a criterion of its own (latency is measured from the schedule either way), but say when the
  // generator itself fell behind: on a shared box that means CPU contention, not only the server.
  if (r.length > 0 && s.lag.p99 > spec.maxP99Ms / 2) r.push(`note: generator lag p99 ${s.lag.p99} ms`);
  s.pass = r.length === 0;
  s.reasons = r;
  return s.pass;
}

/** The line printed after each phase. */
export function phaseLine(label: string, s: PhaseSummary): string {
  return (
    `[${label}] phase ${s.phase}: offered ${fmt(s.offeredRate)}/s delivered ${fmt(s.deliveredRate)}/s  ` +
    `deliver p50 ${s.deliver.p50} p99 ${s.deliver.p99} p99.9 ${s.deliver.p999} max ${s.deliver.max} ms` +
    (s.ack ? `  ack p99 ${s.ack.p99} ms` : '') +
    `  generator lag p99 ${s.lag.p99} ms` +
    `  errors ${s.errored}  cpu server ${s.cpu.serverCores ?? '?'} clients ${s.cpu.clientCores}` +
    (s.pass === null ? '' : s.pass ? '  PASS' : `  FAIL (${s.reasons.join('; ')})`)
  );
}
