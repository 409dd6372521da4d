/**
 * The coordinator of one load run: forks the client processes, gives each its connections (and source
 * addresses when one address has too few ports), runs the phases (one fixed-rate phase, or the steps of a
 * find-the-maximum search), prints a live line each second, and aggregates histograms, timelines and the
 * message accounting of every process.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import {
  andNotCount,
  encodeHist,
  mergeHists,
  now,
  or,
  popcount,
  prefixBits,
  sleep,
  summarize,
  type AccountMsg,
  type Bucket,
  type ConnSpec,
  type FromClient,
  type LatencySummary,
  type PhaseMsg,
  type PhaseResult,
  type ToClient,
  type Totals,
  type Wire,
} from './common.js';
import type { Mode, Pattern } from './options.js';
import { cpuSeconds, processTree, ROOT, treeRss, type ProcMem } from './servers.js';
import { killResult, mergeRecovery, type KillFired, type KillResult, type KillSpec } from './kill.js';

const CLIENT = join(ROOT, 'scripts/bench/client.ts');

export interface LoadSpec {
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
  startRate: number;
  stepFactor: number;
  maxRate: number;
  bisect: number;
  pastMax: number;
  maxP99Ms: number;
  track: number;
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

class Proc {
  readonly child: ChildProcess;
  totals: Totals = { sent: 0, acked: 0, errored: 0, pending: 0, deliveredUnique: 0, duplicates: 0, receipts: 0, closed: 0, opened: 0 };
  errors: Record<string, number> = {};
  lastTickAt = 0;
  exited = false;
  private queue: FromClient[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    readonly id: number,
    prof: string | null,
    onTick: (p: Proc, m: Extract<FromClient, { t: 'tick' }>) => void,
    onFatal: (msg: string) => void,
  ) {
    this.child = fork(CLIENT, [], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', ...(prof ? ['--cpu-prof', '--cpu-prof-dir', join(prof, 'clients')] : [])],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (m: FromClient) => {
      if (m.t === 'tick') {
        this.totals = m.totals;
        this.errors = m.errors;
        this.lastTickAt = now();
        onTick(this, m);
        return;
      }
      if (m.t === 'fatal') onFatal(`client process ${this.id}: ${m.message}`);
      this.queue.push(m);
      this.wake();
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      if (code !== 0 && code !== null) onFatal(`client process ${this.id} exited with code ${code}`);
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(m: ToClient): void {
    if (!this.exited) this.child.send(m);
  }

  async next<T extends FromClient['t']>(t: T, timeoutMs: number): Promise<Extract<FromClient, { t: T }>> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex((m) => m.t === t);
      if (i >= 0) return this.queue.splice(i, 1)[0] as Extract<FromClient, { t: T }>;
      if (this.exited) throw new Error(`client process ${this.id} exited while waiting for "${t}"`);
      const left = deadline - now();
      if (left <= 0) throw new Error(`client process ${this.id}: no "${t}" within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }
}

interface TimelineAcc {
  phase: number;
  offered: number;
  sent: number;
  acked: number;
  delivered: number;
  deliveredUnaffected: number;
  errors: number;
  hists: string[];
}

/** Assigns connections to processes: both ends of a pair in the same process (one clock for its latency). */
export function plan(spec: Pick<LoadSpec, 'pattern' | 'connections' | 'processes' | 'sourceAddresses'>, runId: string): ConnSpec[][] {
  const n = spec.pattern === 'pairs' ? spec.connections - (spec.connections % 2) : spec.connections;
  const K = spec.processes;
  const out: ConnSpec[][] = Array.from({ length: K }, () => []);
  const addr = (i: number) => (spec.sourceAddresses.length === 0 ? null : spec.sourceAddresses[i % spec.sourceAddresses.length]!);
  const user = (i: number) => `b${runId}-${i}`;
  if (spec.pattern === 'pairs') {
    for (let p = 0; p < n / 2; p++) {
      const a = 2 * p;
      const b = a + 1;
      const proc = out[p % K]!;
      proc.push({ idx: a, user: user(a), to: b, toUser: user(b), room: p, localAddress: addr(a) });
      proc.push({ idx: b, user: user(b), to: a, toUser: user(a), room: p, localAddress: addr(b) });
    }
  } else {
    out[0]!.push({ idx: 0, user: user(0), to: -1, toUser: '', room: 0, localAddress: addr(0) });
    for (let i = 1; i < n; i++) out[(i - 1) % K]!.push({ idx: i, user: user(i), to: 0, toUser: user(0), room: 0, localAddress: addr(i) });
  }
  return out;
}

function sumErrors(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** Upper bound on the steps of one find-the-maximum search. */
const MAX_STEPS = 40;

const fmt = (n: number) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString('en-US') : n.toFixed(n >= 10 ? 1 : 2));

export async function runLoad(spec: LoadSpec, log: (line: string) => void): Promise<LoadResult> {
  const runId = Math.random().toString(36).slice(2, 8);
  const assignment = plan(spec, runId);
  const sendersPerProc = assignment.map((cs) => cs.filter((c) => c.to >= 0).length);
  const totalSenders = sendersPerProc.reduce((a, b) => a + b, 0);
  const timeline = new Map<number, TimelineAcc>();
  let runT0 = 0;
  let current: PhaseMsg | null = null;
  let fatal: string | null = null;

  const onTick = (_p: Proc, m: Extract<FromClient, { t: 'tick' }>) => {
    if (m.phase < 0 || !current || m.phase !== current.phase) return;
    const base = Math.round((current.t0 - runT0) / 1000);
    for (const b of m.buckets) addBucket(base + b.sec, m.phase, b);
  };
  const addBucket = (sec: number, phase: number, b: Bucket) => {
    let a = timeline.get(sec);
    if (!a) {
      a = { phase, offered: 0, sent: 0, acked: 0, delivered: 0, deliveredUnaffected: 0, errors: 0, hists: [] };
      timeline.set(sec, a);
    }
    a.deliveredUnaffected += b.deliveredUnaffected;
    a.sent += b.sent;
    a.acked += b.acked;
    a.delivered += b.delivered;
    a.errors += b.errors;
    if (b.deliverHist !== '') a.hists.push(b.deliverHist);
  };

  const procs = assignment.map((_, i) => new Proc(i, spec.profileDir, onTick, (msg) => (fatal ??= msg)));
  const result: LoadResult = {
    label: spec.label,
    wire: spec.wire,
    mode: spec.mode,
    pattern: spec.pattern,
    connections: assignment.reduce((a, c) => a + c.length, 0),
    processes: procs.length,
    sourceAddresses: spec.sourceAddresses,
    opened: { ok: 0, failed: 0, errors: {}, retried: {}, ms: 0 },
    phases: [],
    max: null,
    timeline: [],
    accounting: null,
    memory: null,
    kill: null,
    errors: {},
  };
  let fired: KillFired | null = null;
  let killPhase: PhaseMsg | null = null;
  const clientPids = () => procs.map((p) => p.child.pid!).filter(Boolean);
  const serverCpu = () => (spec.serverPid === null ? null : cpuSeconds(processTree(spec.serverPid)));

  try {
    // ---- connect
    const rssBefore = spec.mode === 'memory' && spec.serverPid !== null ? treeRss(spec.serverPid).totalKiB : 0;
    const t = now();
    for (const p of procs) {
      p.send({
        t: 'init',
        proc: p.id,
        wire: spec.wire,
        url: spec.url,
        secret: spec.secret,
        bodyBytes: spec.bodyBytes,
        connectConcurrency: spec.connectConcurrency,
        connectTimeoutMs: 30_000,
        conns: assignment[p.id]!,
        reconnect: spec.kill !== null && spec.wire === 'iris',
      });
    }
    const progress = setInterval(() => {
      if (spec.quiet) return;
      const ready = procs.reduce((a, p) => a + p.totals.opened, 0);
      log(`[${spec.label}] connecting: ${ready}/${result.connections} ready after ${Math.round((now() - t) / 1000)} s`);
    }, 5000);
    const openTimeout = 120_000 + result.connections * 5;
    const opened = await Promise.all(procs.map((p) => p.next('opened', openTimeout))).finally(() => clearInterval(progress));
    for (const o of opened) {
      result.opened.ok += o.ok;
      result.opened.failed += o.failed;
      sumErrors(result.opened.errors, o.errors);
      sumErrors(result.opened.retried, o.retried);
    }
    result.opened.ms = Math.round(now() - t);
    log(
      `[${spec.label}] ${result.opened.ok}/${result.connections} connections ready in ${(result.opened.ms / 1000).toFixed(1)} s` +
        (result.opened.failed > 0 ? ` (${result.opened.failed} failed: ${JSON.stringify(result.opened.errors)})` : '') +
        (Object.keys(result.opened.retried).length > 0 ? ` (failed attempts, retried: ${JSON.stringify(result.opened.retried)})` : '') +
        ` — ${procs.length} client process(es)` +
        (spec.sourceAddresses.length > 0 ? `, source addresses ${spec.sourceAddresses[0]}..${spec.sourceAddresses.at(-1)}` : ''),
    );
    if (fatal) throw new Error(fatal);
    if (spec.mode !== 'memory' && spec.pattern === 'hot' && opened.some((o) => o.dead.includes(0))) {
      throw new Error('the hot recipient (connection 0) could not connect');
    }
    if (result.opened.ok === 0) throw new Error('no connection could be opened');

    if (spec.mode === 'memory') {
      await sleep(spec.settleMs);
      const after = spec.serverPid !== null ? treeRss(spec.serverPid) : { totalKiB: 0, processes: [] };
      const ok = result.opened.ok;
      result.memory = {
        connections: ok,
        rssBeforeKiB: rssBefore,
        rssAfterKiB: after.totalKiB,
        perConnectionKiB: ok > 0 && spec.serverPid !== null ? Math.round(((after.totalKiB - rssBefore) / ok) * 100) / 100 : 0,
        processes: after.processes,
      };
      log(
        `[${spec.label}] memory: ${ok} idle connections, server RSS ${fmt(rssBefore / 1024)} -> ${fmt(after.totalKiB / 1024)} MiB ` +
          `= ${result.memory.perConnectionKiB} KiB per connection (${after.processes.length} processes)`,
      );
    } else {
      // ---- phases
      runT0 = now() + 300;
      const runPhase = async (n: number, rate: number, warmupMs: number, durationMs: number): Promise<PhaseSummary> => {
        const t0 = Math.max(now() + 300, runT0);
        const measureFrom = t0 + warmupMs;
        const killAt = spec.kill !== null && n === 0 ? measureFrom + spec.kill.atMs : null;
        const affected = killAt === null ? [] : assignment.flat().filter((c) => spec.kill!.owns(c.user)).map((c) => c.idx);
        const msg: PhaseMsg = { t: 'phase', phase: n, rate: 0, t0, measureFrom, end: measureFrom + durationMs, maxInflight: spec.maxInflight, killAt, affected };
        if (killAt !== null) killPhase = msg;
        current = msg;
        for (let s = Math.round((t0 - runT0) / 1000); s < Math.round((msg.end - runT0) / 1000); s++) {
          const a = timeline.get(s) ?? { phase: n, offered: 0, sent: 0, acked: 0, delivered: 0, deliveredUnaffected: 0, errors: 0, hists: [] };
          a.offered = rate;
          a.phase = n;
          timeline.set(s, a);
        }
        for (const p of procs) p.send({ ...msg, rate: totalSenders > 0 ? (rate * sendersPerProc[p.id]!) / totalSenders : 0 });
        // CPU at the window edges.
        let cpu0: { s: number | null; c: number; t: number } | null = null;
        let cpu1: { s: number | null; c: number; t: number } | null = null;
        const atFrom = setTimeout(() => (cpu0 = { s: serverCpu(), c: cpuSeconds(clientPids()), t: now() }), Math.max(0, msg.measureFrom - now()));
        const atEnd = setTimeout(() => (cpu1 = { s: serverCpu(), c: cpuSeconds(clientPids()), t: now() }), Math.max(0, msg.end - now()));
        // The clients take their snapshot on their own timers at the same common-clock instant.
        const atKill =
          killAt === null
            ? undefined
            : setTimeout(() => {
                try {
                  fired = spec.kill!.fire();
                  log(`[${spec.label}] killed worker ${fired.slot} (pid ${fired.pid}) with SIGKILL`);
                } catch (e) {
                  fatal ??= `kill: ${e instanceof Error ? e.message : String(e)}`;
                }
              }, Math.max(0, killAt - now()));
        const live = setInterval(() => {
          if (spec.quiet) return;
          const sec = Math.floor((now() - runT0) / 1000) - 1;
          const a = timeline.get(sec);
          const inflight = procs.reduce((x, p) => x + p.totals.pending, 0);
          const errs = procs.reduce((x, p) => x + Object.values(p.errors).reduce((y, z) => y + z, 0), 0);
          if (!a) return;
          const h = mergeHists(a.hists);
          const p99 = h.totalCount > 0 ? h.getValueAtPercentile(99) / 1000 : 0;
          log(
            `[${spec.label}] ${String(sec).padStart(4)}s  offered ${fmt(a.offered)}/s  sent ${fmt(a.sent)}/s  delivered ${fmt(a.delivered)}/s  ` +
              `p99 ${p99.toFixed(2)} ms  in-flight ${fmt(inflight)}  errors ${fmt(a.errors)}/s (total ${fmt(errs)})`,
          );
        }, 1000);
        try {
          while (now() < msg.end) {
            if (fatal) throw new Error(fatal);
            await sleep(Math.min(200, Math.max(1, msg.end - now())));
          }
          // ---- drain: every acked (iris) / sent (raw) message delivered, nothing unanswered
          const drainStart = now();
          let drained = false;
          while (now() - drainStart < spec.drainMs) {
            if (fatal) throw new Error(fatal);
            const fresh = procs.every((p) => p.lastTickAt > msg.end + 50);
            const expected = procs.reduce((x, p) => x + (spec.wire === 'iris' ? p.totals.acked : p.totals.sent), 0);
            const delivered = procs.reduce((x, p) => x + p.totals.deliveredUnique, 0);
            const pending = procs.reduce((x, p) => x + p.totals.pending, 0);
            if (fresh && pending === 0 && delivered >= expected) {
              drained = true;
              break;
            }
            await sleep(100);
          }
          const drainMs = Math.round(now() - drainStart);
          for (const p of procs) p.send({ t: 'collect', phase: n });
          const results = (await Promise.all(procs.map((p) => p.next('phase_result', 30_000)))).map((r) => r.result);
          await sleep(50); // the final tick of each process (sent just before its result) is in
          return summarizePhase(n, rate, durationMs, results, drained, drainMs, cpu0, cpu1);
        } finally {
          clearInterval(live);
          clearTimeout(atFrom);
          clearTimeout(atEnd);
          clearTimeout(atKill);
        }
      };

      const judge = (s: PhaseSummary) => {
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
      };
      const report = (s: PhaseSummary) =>
        log(
          `[${spec.label}] phase ${s.phase}: offered ${fmt(s.offeredRate)}/s delivered ${fmt(s.deliveredRate)}/s  ` +
            `deliver p50 ${s.deliver.p50} p99 ${s.deliver.p99} p99.9 ${s.deliver.p999} max ${s.deliver.max} ms` +
            (s.ack ? `  ack p99 ${s.ack.p99} ms` : '') +
            `  generator lag p99 ${s.lag.p99} ms` +
            `  errors ${s.errored}  cpu server ${s.cpu.serverCores ?? '?'} clients ${s.cpu.clientCores}` +
            (s.pass === null ? '' : s.pass ? '  PASS' : `  FAIL (${s.reasons.join('; ')})`),
        );

      let n = 0;
      if (spec.mode === 'fixed') {
        const s = await runPhase(n++, spec.rate, spec.warmupMs, spec.durationMs);
        report(s);
        result.phases.push(s);
      } else {
        let rate = spec.startRate;
        let lo: PhaseSummary | null = null;
        let hi: PhaseSummary | null = null;
        let capped = false;
        const step = async (r: number) => {
          const s = await runPhase(n++, Math.round(r), spec.warmupMs, spec.durationMs);
          judge(s);
          report(s);
          result.phases.push(s);
          if (!s.drained) await recover();
          return s;
        };
        const recover = async () => {
          const t1 = now();
          while (now() - t1 < spec.drainMs) {
            const expected = procs.reduce((x, p) => x + (spec.wire === 'iris' ? p.totals.acked : p.totals.sent), 0);
            const delivered = procs.reduce((x, p) => x + p.totals.deliveredUnique, 0);
            if (procs.reduce((x, p) => x + p.totals.pending, 0) === 0 && delivered >= expected) return;
            await sleep(200);
          }
        };
        for (;;) {
          const s = await step(rate);
          if (s.pass) {
            lo = s;
            rate = rate * spec.stepFactor;
            if (rate > spec.maxRate || n >= MAX_STEPS) {
              capped = true;
              break;
            }
          } else {
            hi = s;
            break;
          }
        }
        for (let b = 0; b < spec.bisect && lo && hi; b++) {
          const mid = Math.sqrt(lo.rate * hi.rate);
          if (mid < lo.rate * 1.03) break;
          const s = await step(mid);
          if (s.pass) lo = s;
          else hi = s;
        }
        if (hi) for (let k = 1; k <= spec.pastMax; k++) await step(hi.rate * spec.stepFactor ** k);
        if (lo) result.max = { rate: lo.rate, deliveredRate: lo.deliveredRate, phase: lo.phase, capped };
        log(
          lo
            ? `[${spec.label}] maximum sustained: offered ${fmt(lo.rate)}/s, delivered ${fmt(lo.deliveredRate)}/s (p99 ${lo.deliver.p99} ms)` +
                (capped ? ` — every step passed up to the cap (--max-rate ${spec.maxRate}): the real maximum is higher` : '')
            : `[${spec.label}] no step passed (start rate ${spec.startRate}/s too high?)`,
        );
      }
      current = null;
      result.timeline = [...timeline.entries()]
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

      // ---- accounting
      for (const p of procs) p.send({ t: 'account' });
      const accounts = (await Promise.all(procs.map((p) => p.next('account', 60_000)))).map((m) => m.account);
      result.accounting = account(accounts, procs.reduce((x, p) => x + p.totals.closed, 0));
      const a = result.accounting;
      log(
        `[${spec.label}] accounting: sent ${a.sent}, acked ${a.acked}, refused ${a.errored}, unanswered ${a.unanswered}, ` +
          `delivered ${a.delivered}, lost ${a.lost}, duplicated ${a.duplicated}, delivered-not-acked ${a.deliveredNotAcked}, receipts ${a.receipts}`,
      );
      if (spec.kill !== null) {
        const kp = killPhase as PhaseMsg | null;
        const fk = fired as KillFired | null;
        if (kp === null || fk === null) throw new Error('kill mode: the worker was never killed (the window ended first?)');
        const snaps = await Promise.all(procs.map((p) => p.next('snapshot', 10_000)));
        const owned = new Set(assignment.flat().filter((c) => spec.kill!.owns(c.user)).map((c) => c.idx));
        result.kill = killResult({
          fired: fk,
          atMs: spec.kill.atMs,
          runT0,
          t0: kp.t0,
          measureFrom: kp.measureFrom,
          end: kp.end,
          owned,
          unaffectedSenders: assignment.flat().filter((c) => c.to >= 0 && !owned.has(c.idx) && !owned.has(c.to)).length,
          snapshot: account(snaps.map((m) => m.account), 0),
          snapshotAt: snaps.map((m) => m.at),
          recovery: mergeRecovery(accounts.map((x) => x.recovery)),
          final: a,
          timeline: result.timeline,
        });
      }
    }
    for (const p of procs) sumErrors(result.errors, p.errors);
  } finally {
    for (const p of procs) p.send({ t: 'close' });
    const deadline = now() + 15_000;
    while (procs.some((p) => !p.exited) && now() < deadline) await sleep(50);
    for (const p of procs) if (!p.exited) p.child.kill('SIGKILL');
  }
  return result;
}

function summarizePhase(
  n: number,
  rate: number,
  durationMs: number,
  results: PhaseResult[],
  drained: boolean,
  drainMs: number,
  cpu0: { s: number | null; c: number; t: number } | null,
  cpu1: { s: number | null; c: number; t: number } | null,
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

function account(accounts: AccountMsg[], closed: number): Accounting {
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
