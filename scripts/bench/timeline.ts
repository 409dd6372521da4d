/**
 * The per-second timeline of a load run, on the run's common clock (second 0 = the first phase's start): what
 * was offered, and what the client processes' ticks say was sent, acked and delivered, with latency.
 */
import { mergeHists, type Bucket } from './common.js';
import type { TimelinePoint } from './results.js';

/** A second being filled: the counts of its TimelinePoint, and the histograms its p50 and p99 come from. */
interface Second extends Omit<TimelinePoint, 't' | 'p50' | 'p99'> {
  /** Encoded deliver-latency histograms of the processes' buckets for this second. */
  hists: string[];
}

const empty = (phase: number): Second => ({ phase, offered: 0, sent: 0, acked: 0, delivered: 0, deliveredUnaffected: 0, errors: 0, hists: [] });

export class Timeline {
  private readonly secs = new Map<number, Second>();

  /** Seconds [from, to) belong to `phase`, offered at `rate`. */
  offer(from: number, to: number, phase: number, rate: number): void {
    for (let s = from; s < to; s++) {
      const a = this.secs.get(s) ?? empty(phase);
      a.offered = rate;
      a.phase = phase;
      this.secs.set(s, a);
    }
  }

  /** One process's bucket for second `sec`. */
  add(sec: number, phase: number, b: Bucket): void {
    let a = this.secs.get(sec);
    if (!a) {
      a = empty(phase);
      this.secs.set(sec, a);
    }
    a.deliveredUnaffected += b.deliveredUnaffected;
    a.sent += b.sent;
    a.acked += b.acked;
    a.delivered += b.delivered;
    a.errors += b.errors;
    if (b.deliverHist !== '') a.hists.push(b.deliverHist);
  }

  /** Second `sec` so far (null: nothing for it yet), with its p99 deliver latency in ms. */
  second(sec: number): (Omit<Second, 'hists'> & { p99: number }) | null {
    const a = this.secs.get(sec);
    if (!a) return null;
    const h = mergeHists(a.hists);
    return { ...a, p99: h.totalCount > 0 ? h.getValueAtPercentile(99) / 1000 : 0 };
  }

  points(): TimelinePoint[] {
    return [...this.secs.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([sec, a]) => {
        const h = mergeHists(a.hists);
        return {
          t: sec,
          phase: a.phase,
          offered: a.offered,
          sent: a.sent,
          acked: a.acked,
          delivered: a.delivered,
          deliveredUnaffected: a.deliveredUnaffected,
          errors: a.errors,
          p50: h.totalCount > 0 ? h.getValueAtPercentile(50) / 1000 : 0,
          p99: h.totalCount > 0 ? h.getValueAtPercentile(99) / 1000 : 0,
        };
      });
  }
}
