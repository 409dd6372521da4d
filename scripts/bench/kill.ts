/**
 * Worker-kill mode (`--kill-worker-at`): SIGKILL one on-prem worker in the middle of a fixed-rate run, keep the
 * load going, and show that every acked message was still delivered exactly once, how much was in flight at
 * the kill, and how long the killed worker's users were without service.
 *
 * The worker is picked by pid: the pids the supervisor prints in its ready line, in worker order, each checked
 * in /proc to be a live child of the supervisor this run started (never by process name). Figures are built
 * from three sources: the clients' accounting snapshot at the kill instant, their reconnect events, and the
 * supervisor's own log lines (timestamped by the harness as they arrive).
 */
import { readFileSync } from 'node:fs';
import { now, type ReconnectStats } from './common.js';
import type { Accounting, TimelinePoint } from './coordinator.js';

/** What the coordinator needs to run a kill: when, how, and whose users the victim owns. */
export interface KillSpec {
  /** Ms into the measured window (after the warm-up). */
  atMs: number;
  /** SIGKILLs the chosen worker at once and says what it killed. Throws if there is nothing to kill. */
  fire: () => KillFired;
  /** Whether a user id belongs to the worker that is killed (so its connections are expected to drop). */
  owns: (user: string) => boolean;
}

export interface KillFired {
  slot: number;
  pid: number;
  /** Common-clock ms of the kill(2) call. */
  at: number;
  /** How the pid was checked before it was signalled (its parent and state in /proc). */
  checked: string;
}

export interface SupervisorTimes {
  /** Ms after the kill at which the supervisor's "died", "started (pid)" and "is back" lines arrived. */
  diedMs: number | null;
  startedMs: number | null;
  backMs: number | null;
  /** The restarted worker's pid (from its "started" line). */
  newPid: number | null;
  lines: string[];
}

export interface KillResult {
  slot: number;
  pid: number;
  checked: string;
  /** Into the measured window, ms: requested, and when the kill really happened. */
  atMs: number;
  actualAtMs: number;
  killedAt: string;
  /** Common-clock ms of the kill (the supervisor's lines are timed against it). */
  killedAtMs: number;
  /** Connections whose user the killed worker owns, and how many of them / of the others dropped. */
  ownedConnections: number;
  /**
   * Senders where neither end is owned by the killed worker. With 2 workers and the pairs pattern there are
   * none: FNV-1a's lowest bit is the parity of the last character, so users -2p and -2p+1 never share a worker.
   */
  unaffectedSenders: number;
  droppedOwned: number;
  droppedOther: number;
  reconnected: number;
  stillDown: number;
  /** At the kill (clients' snapshot; skew = how far the latest client timer fired from the kill, ms). */
  atKill: { skewMs: number; sent: number; acked: number; inFlight: number; ackedNotDelivered: number; delivered: number };
  /** Ms after the kill, common clock. */
  recovery: {
    firstDropMs: number | null;
    firstWelcomeMs: number | null;
    allWelcomedMs: number | null;
    firstDeliverMs: number | null;
    firstAckMs: number | null;
    resent: number;
    queued: number;
    failedAttempts: Record<string, number>;
    staleEntries: number;
  };
  supervisor: SupervisorTimes | null;
  /** Per-second figures from the timeline: full seconds of the window before the kill, and after every user was back. */
  throughput: {
    deliveredBefore: number;
    ackedBefore: number;
    deliveredAfter: number;
    ackedAfter: number;
    /** Lowest delivered/s in a full second from the kill to the end of the window. */
    deliveredMin: number;
    /**
     * The same for messages between two users the killed worker does not own: whether the kill disturbed
     * anyone else (before, lowest second from the kill on, after).
     */
    unaffectedBefore: number;
    unaffectedMin: number;
    unaffectedAfter: number;
    secondsBefore: number;
    secondsAfter: number;
  };
  pass: boolean;
  failures: string[];
}

/** "10s", "10", "2.5s", "500ms" -> ms. */
export function parseDuration(name: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v.trim());
  if (!m) throw new Error(`--${name} takes a time like 10s, 2.5s or 500ms, got "${v}"`);
  return m[2] === 'ms' ? Number(m[1]) : Number(m[1]) * 1000;
}

function procStat(pid: number): { state: string; ppid: number } | null {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, ppid: Number(f[1]) };
  } catch {
    return null;
  }
}

/**
 * SIGKILL worker `slot` of the supervisor `supervisorPid`, whose worker pids (in worker order) are `pids`.
 * Refuses unless that pid is a live (not zombie) child of this supervisor right now.
 */
export function killWorker(supervisorPid: number, pids: readonly number[], slot: number): KillFired {
  const pid = pids[slot];
  if (pid === undefined) throw new Error(`no worker ${slot}: the server printed ${pids.length} worker pid(s)`);
  const st = procStat(pid);
  if (!st) throw new Error(`worker ${slot} (pid ${pid}) is not running`);
  if (st.ppid !== supervisorPid) throw new Error(`pid ${pid} is not a child of the supervisor ${supervisorPid} (parent ${st.ppid}); not signalling it`);
  if (st.state === 'Z') throw new Error(`worker ${slot} (pid ${pid}) is already dead (zombie)`);
  process.kill(pid, 'SIGKILL');
  return { slot, pid, at: now(), checked: `pid ${pid}: parent ${st.ppid} (the supervisor), state ${st.state}` };
}

/** The supervisor's lines about this worker after the kill (onprem/supervisor.ts words them; a test pins them). */
export function supervisorTimes(lines: readonly { t: number; text: string }[], fired: KillFired): SupervisorTimes {
  const out: SupervisorTimes = { diedMs: null, startedMs: null, backMs: null, newPid: null, lines: [] };
  const ms = (t: number) => Math.round((t - fired.at) * 10) / 10;
  const died = new RegExp(`worker ${fired.slot} \\(pid ${fired.pid}\\) died \\(SIGKILL`);
  const started = new RegExp(`worker ${fired.slot} started \\(pid (\\d+)\\)`);
  const back = new RegExp(`worker ${fired.slot} is back \\(pid (\\d+)\\)`);
  for (const l of lines) {
    if (l.t < fired.at - 1) continue;
    if (out.diedMs === null && died.test(l.text)) {
      out.diedMs = ms(l.t);
      out.lines.push(l.text);
    } else if (out.diedMs !== null && out.startedMs === null && started.test(l.text)) {
      out.startedMs = ms(l.t);
      out.newPid = Number(started.exec(l.text)![1]);
      out.lines.push(l.text);
    } else if (out.startedMs !== null && out.backMs === null && back.test(l.text)) {
      out.backMs = ms(l.t);
      out.lines.push(l.text);
    }
  }
  return out;
}

export function mergeRecovery(all: ReconnectStats[]): ReconnectStats {
  const min = (xs: (number | null)[]) => xs.reduce<number | null>((a, x) => (x === null ? a : a === null ? x : Math.min(a, x)), null);
  const max = (xs: (number | null)[]) => xs.reduce<number | null>((a, x) => (x === null ? a : a === null ? x : Math.max(a, x)), null);
  const attempts: Record<string, number> = {};
  for (const r of all) for (const [k, v] of Object.entries(r.attempts)) attempts[k] = (attempts[k] ?? 0) + v;
  return {
    dropped: all.flatMap((r) => r.dropped),
    reconnected: all.reduce((a, r) => a + r.reconnected, 0),
    down: all.flatMap((r) => r.down),
    firstDropAt: min(all.map((r) => r.firstDropAt)),
    firstWelcomeAt: min(all.map((r) => r.firstWelcomeAt)),
    lastWelcomeAt: max(all.map((r) => r.lastWelcomeAt)),
    firstDeliverAt: min(all.map((r) => r.firstDeliverAt)),
    firstAckAt: min(all.map((r) => r.firstAckAt)),
    resent: all.reduce((a, r) => a + r.resent, 0),
    queued: all.reduce((a, r) => a + r.queued, 0),
    attempts,
    stale: all.reduce((a, r) => a + r.stale, 0),
  };
}

export interface KillInputs {
  fired: KillFired;
  atMs: number;
  /** Common-clock ms: start of the timeline (its t = 0), the phase's schedule origin, the measured window. */
  runT0: number;
  t0: number;
  measureFrom: number;
  end: number;
  /** Global connection index -> whether the killed worker owns its user. */
  owned: ReadonlySet<number>;
  unaffectedSenders: number;
  snapshot: Accounting;
  snapshotAt: number[];
  recovery: ReconnectStats;
  final: Accounting;
  timeline: TimelinePoint[];
}

export function killResult(k: KillInputs): KillResult {
  const rel = (t: number | null) => (t === null ? null : Math.round((t - k.fired.at) * 10) / 10);
  const r = k.recovery;
  const dropped = new Set(r.dropped);
  const droppedOwned = [...dropped].filter((i) => k.owned.has(i)).length;
  // Throughput by whole seconds of the timeline: before = window seconds ending before the kill; after =
  // seconds starting once the last dropped connection had its welcome again (or the kill, if none dropped).
  // The coordinator files a phase's buckets at round((t0 - runT0) / 1000) + floor((t - t0) / 1000).
  const base = Math.round((k.t0 - k.runT0) / 1000);
  const sec = (t: number) => base + (t - k.t0) / 1000;
  const backAt = r.lastWelcomeAt ?? k.fired.at;
  const before = k.timeline.filter((p) => p.t >= Math.ceil(sec(k.measureFrom) - 1e-6) && p.t + 1 <= sec(k.fired.at));
  const after = k.timeline.filter((p) => p.t >= sec(backAt) && p.t + 1 <= sec(k.end) + 1e-6);
  const during = k.timeline.filter((p) => p.t >= Math.floor(sec(k.fired.at)) && p.t + 1 <= sec(k.end) + 1e-6);
  const mean = (ps: TimelinePoint[], f: (p: TimelinePoint) => number) => (ps.length === 0 ? 0 : Math.round(ps.reduce((a, p) => a + f(p), 0) / ps.length));
  const out: KillResult = {
    slot: k.fired.slot,
    pid: k.fired.pid,
    checked: k.fired.checked,
    atMs: k.atMs,
    actualAtMs: Math.round(k.fired.at - k.measureFrom),
    killedAt: new Date(k.fired.at).toISOString(),
    killedAtMs: k.fired.at,
    ownedConnections: k.owned.size,
    unaffectedSenders: k.unaffectedSenders,
    droppedOwned,
    droppedOther: dropped.size - droppedOwned,
    reconnected: r.reconnected,
    stillDown: r.down.length,
    atKill: {
      skewMs: Math.round(Math.max(0, ...k.snapshotAt.map((t) => Math.abs(t - k.fired.at))) * 10) / 10,
      sent: k.snapshot.sent,
      acked: k.snapshot.acked,
      inFlight: k.snapshot.unanswered,
      // "lost" of an accounting taken mid-run = acked and not delivered yet.
      ackedNotDelivered: k.snapshot.lost,
      delivered: k.snapshot.delivered,
    },
    recovery: {
      firstDropMs: rel(r.firstDropAt),
      firstWelcomeMs: rel(r.firstWelcomeAt),
      allWelcomedMs: r.down.length === 0 ? rel(r.lastWelcomeAt) : null,
      firstDeliverMs: rel(r.firstDeliverAt),
      firstAckMs: rel(r.firstAckAt),
      resent: r.resent,
      queued: r.queued,
      failedAttempts: r.attempts,
      staleEntries: r.stale,
    },
    supervisor: null,
    throughput: {
      deliveredBefore: mean(before, (p) => p.delivered),
      ackedBefore: mean(before, (p) => p.acked),
      deliveredAfter: mean(after, (p) => p.delivered),
      ackedAfter: mean(after, (p) => p.acked),
      deliveredMin: during.length === 0 ? 0 : Math.min(...during.map((p) => p.delivered)),
      // `?? 0`: timelines written before this field existed (--render of an older result.json).
      unaffectedBefore: mean(before, (p) => p.deliveredUnaffected ?? 0),
      unaffectedMin: during.length === 0 ? 0 : Math.min(...during.map((p) => p.deliveredUnaffected ?? 0)),
      unaffectedAfter: mean(after, (p) => p.deliveredUnaffected ?? 0),
      secondsBefore: before.length,
      secondsAfter: after.length,
    },
    pass: false,
    failures: [],
  };
  judgeKill(out, k.final);
  return out;
}

/** The run fails unless every acked message arrived exactly once and the killed worker's users were served again. */
export function judgeKill(kr: KillResult, a: Accounting): void {
  const f: string[] = [];
  if (a.lost > 0) f.push(`${a.lost} acked message(s) never delivered (LOST)`);
  if (a.duplicated > 0) f.push(`${a.duplicated} message(s) delivered more than once`);
  if (a.unanswered > 0) f.push(`${a.unanswered} send(s) never answered`);
  if (kr.ownedConnections > 0 && kr.droppedOwned === 0) f.push('no connection of the killed worker dropped: was anything killed?');
  if (kr.stillDown > 0) f.push(`${kr.stillDown} connection(s) still down at the end`);
  if (kr.supervisor !== null && kr.supervisor.backMs === null) f.push(`the supervisor never logged worker ${kr.slot} back`);
  kr.failures = f;
  kr.pass = f.length === 0;
}

/** A mean over whole seconds of the timeline; a short window may have none on one side of the kill. */
const perSec = (v: number, seconds: number) => (seconds === 0 ? 'n/a (no whole second)' : String(v));
const ms = (v: number | null) => (v === null ? 'never' : `${v.toLocaleString('en-US')} ms`);

export function killLines(label: string, k: KillResult): string[] {
  const s = k.supervisor;
  return [
    `[${label}] kill: worker ${k.slot} (pid ${k.pid}) SIGKILLed ${(k.actualAtMs / 1000).toFixed(3)} s into the window; it owned ${k.ownedConnections} connection(s), ${k.droppedOwned} dropped` +
      (k.droppedOther > 0 ? ` (+${k.droppedOther} of other workers)` : ''),
    `[${label}] kill: at the kill: ${k.atKill.inFlight} in flight (sent, not acked), ${k.atKill.ackedNotDelivered} acked but not delivered yet (snapshot skew ${k.atKill.skewMs} ms)`,
    `[${label}] kill: after the kill: first welcome ${ms(k.recovery.firstWelcomeMs)}, all reconnected ${ms(k.recovery.allWelcomedMs)}, ` +
      `first deliver on a reconnected connection ${ms(k.recovery.firstDeliverMs)}, first send_ack ${ms(k.recovery.firstAckMs)}; ` +
      `resent ${k.recovery.resent}, queued while down ${k.recovery.queued}, failed attempts ${JSON.stringify(k.recovery.failedAttempts)}`,
    s === null
      ? `[${label}] kill: supervisor: no log lines`
      : `[${label}] kill: supervisor: died line ${ms(s.diedMs)}, restarted (pid ${s.newPid ?? '?'}) ${ms(s.startedMs)}, back ${ms(s.backMs)}`,
    `[${label}] kill: delivered/s ${perSec(k.throughput.deliveredBefore, k.throughput.secondsBefore)} before, ` +
      `${perSec(k.throughput.deliveredAfter, k.throughput.secondsAfter)} after, lowest second ${k.throughput.deliveredMin}; ` +
      ((k.unaffectedSenders ?? 0) === 0
        ? 'no sender whose pair is wholly on other workers'
        : `between users of the other workers (${k.unaffectedSenders} senders) ${perSec(k.throughput.unaffectedBefore, k.throughput.secondsBefore)} before, ` +
          `${perSec(k.throughput.unaffectedAfter, k.throughput.secondsAfter)} after, lowest second ${k.throughput.unaffectedMin}`) +
      `; ${k.pass ? 'PASS' : `FAIL (${k.failures.join('; ')})`}`,
  ];
}
