/**
 * The coordinator of one load run: forks the client processes, gives each its connections (and source
 * addresses when one address has too few ports), runs the phases (one fixed-rate phase, or the steps of a
 * find-the-maximum search), prints a live line each second, and aggregates histograms, timelines and the
 * message accounting of every process.
 *
 * A run goes through the phases of `runLoad`, each a method of LoadRun: start the client processes and open
 * the connections; then either measure idle memory, or run the load phases (each: warm-up, measurement
 * window, drain, collect) and account for every message; finally stop the client processes.
 */
import { account, fmt, judge, phaseLine, summarizePhase, sumErrors, type CpuMark } from './aggregate.js';
import { now, sleep, type AccountMsg, type ConnSpec, type FromClient, type PhaseMsg } from './common.js';
import { killResult, mergeRecovery, type KillFired, type KillSpec } from './kill.js';
import { Proc, plan } from './procs.js';
import type { Accounting, LoadResult, LoadSpec, PhaseSummary } from './results.js';
import { cpuSeconds, processTree, treeRss } from './servers.js';
import { Timeline } from './timeline.js';
import { maxSteps, type PhaseStatus } from './progress.js';

export type { Accounting, LoadResult, LoadSpec, MemoryResult, PhaseSummary, TimelinePoint } from './results.js';

/** Upper bound on the steps of one find-the-maximum search. */
const MAX_STEPS = 40;

/** `status`: where the live line goes instead of `log` when the caller draws a progress bar (scripts/bench/progress.ts). */
export async function runLoad(spec: LoadSpec, log: (line: string) => void, status?: (s: PhaseStatus) => void): Promise<LoadResult> {
  const run = new LoadRun(spec, log, status);
  try {
    await run.startClients();
    if (spec.mode === 'memory') {
      await run.measureMemory();
    } else {
      await run.runPhases();
      await run.account();
    }
    run.collectErrors();
  } finally {
    await run.stopClients();
  }
  return run.result;
}

/** What one measurement phase keeps while it runs: its CPU marks (taken at the window's edges) and its timers. */
interface PhaseWatch {
  cpu0: CpuMark | null;
  cpu1: CpuMark | null;
  stop(): void;
}

/** The state one run's phases share. */
class LoadRun {
  readonly result: LoadResult;
  private readonly assignment: ConnSpec[][];
  private readonly sendersPerProc: number[];
  private readonly totalSenders: number;
  private readonly procs: Proc[];
  private readonly timeline = new Timeline();
  /** The common-clock instant the first phase starts: timeline seconds count from it. */
  private runT0 = 0;
  /** The phase whose ticks go into the timeline. */
  private current: PhaseMsg | null = null;
  /** Why the run must stop (a client process failed, the kill failed); checked while waiting. */
  private fatal: string | null = null;
  /** Server RSS before the connections opened (memory mode). */
  private rssBefore = 0;
  /** Kill mode: the kill, and the phase it happened in. */
  private fired: KillFired | null = null;
  private killPhase: PhaseMsg | null = null;
  private accounts: AccountMsg[] = [];

  constructor(
    private readonly spec: LoadSpec,
    private readonly log: (line: string) => void,
    private readonly status?: (s: PhaseStatus) => void,
  ) {
    const runId = Math.random().toString(36).slice(2, 8);
    this.assignment = plan(spec, runId);
    this.sendersPerProc = this.assignment.map((cs) => cs.filter((c) => c.to >= 0).length);
    this.totalSenders = this.sendersPerProc.reduce((a, b) => a + b, 0);
    this.procs = this.assignment.map((_, i) => new Proc(i, spec.profileDir, (_p, m) => this.onTick(m), (msg) => (this.fatal ??= msg)));
    this.result = {
      label: spec.label,
      wire: spec.wire,
      mode: spec.mode,
      pattern: spec.pattern,
      connections: this.assignment.reduce((a, c) => a + c.length, 0),
      processes: this.procs.length,
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
  }

  // ------------------------------------------------------------------ start: processes and connections

  /** Hands every process its connections and waits until all of them opened (or finally failed). */
  async startClients(): Promise<void> {
    const { spec, procs, result } = this;
    this.rssBefore = spec.mode === 'memory' && spec.serverPid !== null ? treeRss(spec.serverPid).totalKiB : 0;
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
        conns: this.assignment[p.id]!,
        reconnect: spec.kill !== null && spec.wire === 'iris',
      });
    }
    const progress = setInterval(() => {
      if (spec.quiet) return;
      const ready = procs.reduce((a, p) => a + p.totals.opened, 0);
      this.log(`[${spec.label}] connecting: ${ready}/${result.connections} ready after ${Math.round((now() - t) / 1000)} s`);
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
    this.log(
      `[${spec.label}] ${result.opened.ok}/${result.connections} connections ready in ${(result.opened.ms / 1000).toFixed(1)} s` +
        (result.opened.failed > 0 ? ` (${result.opened.failed} failed: ${JSON.stringify(result.opened.errors)})` : '') +
        (Object.keys(result.opened.retried).length > 0 ? ` (failed attempts, retried: ${JSON.stringify(result.opened.retried)})` : '') +
        ` — ${procs.length} client process(es)` +
        (spec.sourceAddresses.length > 0 ? `, source addresses ${spec.sourceAddresses[0]}..${spec.sourceAddresses.at(-1)}` : ''),
    );
    this.checkFatal();
    if (spec.mode !== 'memory' && spec.pattern === 'hot' && opened.some((o) => o.dead.includes(0))) {
      throw new Error('the hot recipient (connection 0) could not connect');
    }
    if (result.opened.ok === 0) throw new Error('no connection could be opened');
  }

  // ------------------------------------------------------------------ memory mode

  /** Server RSS per idle connection, after the connections settled. */
  async measureMemory(): Promise<void> {
    const { spec, rssBefore } = this;
    await sleep(spec.settleMs);
    const after = spec.serverPid !== null ? treeRss(spec.serverPid) : { totalKiB: 0, processes: [] };
    const ok = this.result.opened.ok;
    this.result.memory = {
      connections: ok,
      rssBeforeKiB: rssBefore,
      rssAfterKiB: after.totalKiB,
      perConnectionKiB: ok > 0 && spec.serverPid !== null ? Math.round(((after.totalKiB - rssBefore) / ok) * 100) / 100 : 0,
      processes: after.processes,
    };
    this.log(
      `[${spec.label}] memory: ${ok} idle connections, server RSS ${fmt(rssBefore / 1024)} -> ${fmt(after.totalKiB / 1024)} MiB ` +
        `= ${this.result.memory.perConnectionKiB} KiB per connection (${after.processes.length} processes)`,
    );
  }

  // ------------------------------------------------------------------ load phases

  /** One fixed-rate phase, or the steps of a find-the-maximum search; then the run's timeline. */
  async runPhases(): Promise<void> {
    this.runT0 = now() + 300;
    if (this.spec.mode === 'fixed') {
      const s = await this.runPhase(0, this.spec.rate);
      this.log(phaseLine(this.spec.label, s));
      this.result.phases.push(s);
    } else {
      await this.searchMax();
    }
    this.current = null;
    this.result.timeline = this.timeline.points();
  }

  /**
   * Raises the rate by stepFactor while steps pass, bisects between the last pass and the first failure, then
   * runs pastMax steps above the failure (to show the curve past the knee).
   */
  private async searchMax(): Promise<void> {
    const { spec } = this;
    let n = 0;
    let rate = spec.startRate;
    let lo: PhaseSummary | null = null;
    let hi: PhaseSummary | null = null;
    let capped = false;
    const step = async (r: number) => {
      const s = await this.runPhase(n++, Math.round(r));
      judge(s, spec);
      this.log(phaseLine(spec.label, s));
      this.result.phases.push(s);
      if (!s.drained) await this.waitForBacklog();
      return s;
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
    if (lo) this.result.max = { rate: lo.rate, deliveredRate: lo.deliveredRate, phase: lo.phase, capped };
    this.log(
      lo
        ? `[${spec.label}] maximum sustained: offered ${fmt(lo.rate)}/s, delivered ${fmt(lo.deliveredRate)}/s (p99 ${lo.deliver.p99} ms)` +
            (capped ? ` — every step passed up to the cap (--max-rate ${spec.maxRate}): the real maximum is higher` : '')
        : `[${spec.label}] no step passed (start rate ${spec.startRate}/s too high?)`,
    );
  }

  /** One phase: warm-up, then the measurement window at `rate`, then the drain, then every process's result. */
  private async runPhase(n: number, rate: number): Promise<PhaseSummary> {
    const { spec, procs } = this;
    const msg = this.startPhase(n, rate);
    const watch = this.watchPhase(msg);
    try {
      while (now() < msg.end) {
        this.checkFatal();
        await sleep(Math.min(200, Math.max(1, msg.end - now())));
      }
      const { drained, drainMs } = await this.drain(msg.end);
      for (const p of procs) p.send({ t: 'collect', phase: n });
      const results = (await Promise.all(procs.map((p) => p.next('phase_result', 30_000)))).map((r) => r.result);
      await sleep(50); // the final tick of each process (sent just before its result) is in
      return summarizePhase(n, rate, spec.durationMs, results, drained, drainMs, watch.cpu0, watch.cpu1);
    } finally {
      watch.stop();
    }
  }

  /** Schedules phase `n` on the common clock and tells every process its share of the rate. */
  private startPhase(n: number, rate: number): PhaseMsg {
    const { spec, runT0 } = this;
    const t0 = Math.max(now() + 300, runT0);
    const measureFrom = t0 + spec.warmupMs;
    const killAt = spec.kill !== null && n === 0 ? measureFrom + spec.kill.atMs : null;
    const affected = killAt === null ? [] : this.assignment.flat().filter((c) => spec.kill!.owns(c.user)).map((c) => c.idx);
    const msg: PhaseMsg = { t: 'phase', phase: n, rate: 0, t0, measureFrom, end: measureFrom + spec.durationMs, maxInflight: spec.maxInflight, killAt, affected };
    if (killAt !== null) this.killPhase = msg;
    this.current = msg;
    this.timeline.offer(Math.round((t0 - runT0) / 1000), Math.round((msg.end - runT0) / 1000), n, rate);
    for (const p of this.procs) p.send({ ...msg, rate: this.totalSenders > 0 ? (rate * this.sendersPerProc[p.id]!) / this.totalSenders : 0 });
    return msg;
  }

  /** The timers of a running phase: CPU at the window's edges, the kill (kill mode), and the live line. */
  private watchPhase(msg: PhaseMsg): PhaseWatch {
    const { spec, procs } = this;
    const clientPids = () => procs.map((p) => p.child.pid!).filter(Boolean);
    const serverCpu = () => (spec.serverPid === null ? null : cpuSeconds(processTree(spec.serverPid)));
    const watch: PhaseWatch = { cpu0: null, cpu1: null, stop: () => {} };
    const atFrom = setTimeout(() => (watch.cpu0 = { s: serverCpu(), c: cpuSeconds(clientPids()), t: now() }), Math.max(0, msg.measureFrom - now()));
    const atEnd = setTimeout(() => (watch.cpu1 = { s: serverCpu(), c: cpuSeconds(clientPids()), t: now() }), Math.max(0, msg.end - now()));
    // The clients take their snapshot on their own timers at the same common-clock instant.
    const killAt = msg.killAt;
    const atKill =
      killAt === null
        ? undefined
        : setTimeout(() => {
            try {
              this.fired = spec.kill!.fire();
              this.log(`[${spec.label}] killed worker ${this.fired.slot} (pid ${this.fired.pid}) with SIGKILL`);
            } catch (e) {
              this.fatal ??= `kill: ${e instanceof Error ? e.message : String(e)}`;
            }
          }, Math.max(0, killAt - now()));
    const live = setInterval(() => this.liveLine(), 1000);
    watch.stop = () => {
      clearInterval(live);
      clearTimeout(atFrom);
      clearTimeout(atEnd);
      clearTimeout(atKill);
    };
    return watch;
  }

  /** The last full second of the timeline, printed while a phase runs. */
  private liveLine(): void {
    const { spec, procs } = this;
    if (spec.quiet) return;
    const sec = Math.floor((now() - this.runT0) / 1000) - 1;
    const a = this.timeline.second(sec);
    const inflight = procs.reduce((x, p) => x + p.totals.pending, 0);
    const errs = procs.reduce((x, p) => x + Object.values(p.errors).reduce((y, z) => y + z, 0), 0);
    if (!a) return;
    const detail =
      `[${spec.label}] ${String(sec).padStart(4)}s  offered ${fmt(a.offered)}/s  sent ${fmt(a.sent)}/s  delivered ${fmt(a.delivered)}/s  ` +
      `p99 ${a.p99.toFixed(2)} ms  in-flight ${fmt(inflight)}  errors ${fmt(a.errors)}/s (total ${fmt(errs)})`;
    const cur = this.current;
    if (!this.status || !cur) {
      this.log(detail);
      return;
    }
    const max = spec.mode === 'max';
    const frac = (now() - cur.t0) / Math.max(1, cur.end - cur.t0);
    this.status({ label: spec.label, step: cur.phase + 1, steps: max ? maxSteps(spec, MAX_STEPS) : 1, bound: max, frac, detail });
  }

  /**
   * After the window: waits (at most drainMs) until every acked (iris) / sent (raw) message was delivered and
   * nothing is unanswered, by the processes' ticks sent after the window ended.
   */
  private async drain(end: number): Promise<{ drained: boolean; drainMs: number }> {
    const { spec, procs } = this;
    const drainStart = now();
    let drained = false;
    while (now() - drainStart < spec.drainMs) {
      this.checkFatal();
      const fresh = procs.every((p) => p.lastTickAt > end + 50);
      const expected = procs.reduce((x, p) => x + (spec.wire === 'iris' ? p.totals.acked : p.totals.sent), 0);
      const delivered = procs.reduce((x, p) => x + p.totals.deliveredUnique, 0);
      const pending = procs.reduce((x, p) => x + p.totals.pending, 0);
      if (fresh && pending === 0 && delivered >= expected) {
        drained = true;
        break;
      }
      await sleep(100);
    }
    return { drained, drainMs: Math.round(now() - drainStart) };
  }

  /** Between search steps: a step that did not drain leaves a backlog the next step must not inherit. */
  private async waitForBacklog(): Promise<void> {
    const { spec, procs } = this;
    const t1 = now();
    while (now() - t1 < spec.drainMs) {
      const expected = procs.reduce((x, p) => x + (spec.wire === 'iris' ? p.totals.acked : p.totals.sent), 0);
      const delivered = procs.reduce((x, p) => x + p.totals.deliveredUnique, 0);
      if (procs.reduce((x, p) => x + p.totals.pending, 0) === 0 && delivered >= expected) return;
      await sleep(200);
    }
  }

  private onTick(m: Extract<FromClient, { t: 'tick' }>): void {
    const current = this.current;
    if (m.phase < 0 || !current || m.phase !== current.phase) return;
    const base = Math.round((current.t0 - this.runT0) / 1000);
    for (const b of m.buckets) this.timeline.add(base + b.sec, m.phase, b);
  }

  // ------------------------------------------------------------------ accounting

  /** Every message of the run accounted for (lost, duplicated, unanswered); kill mode: the recovery too. */
  async account(): Promise<void> {
    const { spec, procs } = this;
    for (const p of procs) p.send({ t: 'account' });
    this.accounts = (await Promise.all(procs.map((p) => p.next('account', 60_000)))).map((m) => m.account);
    const a = account(this.accounts, procs.reduce((x, p) => x + p.totals.closed, 0));
    this.result.accounting = a;
    this.log(
      `[${spec.label}] accounting: sent ${a.sent}, acked ${a.acked}, refused ${a.errored}, unanswered ${a.unanswered}, ` +
        `delivered ${a.delivered}, lost ${a.lost}, duplicated ${a.duplicated}, delivered-not-acked ${a.deliveredNotAcked}, receipts ${a.receipts}`,
    );
    if (spec.kill !== null) await this.accountKill(spec.kill, a);
  }

  private async accountKill(kill: KillSpec, final: Accounting): Promise<void> {
    const kp = this.killPhase;
    const fk = this.fired;
    if (kp === null || fk === null) throw new Error('kill mode: the worker was never killed (the window ended first?)');
    const snaps = await Promise.all(this.procs.map((p) => p.next('snapshot', 10_000)));
    const all = this.assignment.flat();
    const owned = new Set(all.filter((c) => kill.owns(c.user)).map((c) => c.idx));
    this.result.kill = killResult({
      fired: fk,
      atMs: kill.atMs,
      runT0: this.runT0,
      t0: kp.t0,
      measureFrom: kp.measureFrom,
      end: kp.end,
      owned,
      unaffectedSenders: all.filter((c) => c.to >= 0 && !owned.has(c.idx) && !owned.has(c.to)).length,
      snapshot: account(snaps.map((m) => m.account), 0),
      snapshotAt: snaps.map((m) => m.at),
      recovery: mergeRecovery(this.accounts.map((x) => x.recovery)),
      final,
      timeline: this.result.timeline,
    });
  }

  // ------------------------------------------------------------------ end

  collectErrors(): void {
    for (const p of this.procs) sumErrors(this.result.errors, p.errors);
  }

  /** Asks every process to close its connections and exit; kills what is still there after 15 s. */
  async stopClients(): Promise<void> {
    const { procs } = this;
    for (const p of procs) p.send({ t: 'close' });
    const deadline = now() + 15_000;
    while (procs.some((p) => !p.exited) && now() < deadline) await sleep(50);
    for (const p of procs) if (!p.exited) p.child.kill('SIGKILL');
  }

  private checkFatal(): void {
    if (this.fatal) throw new Error(this.fatal);
  }
}
