import { fork, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { DEV_AUTH_WARNING, DEV_SECRET } from '../auth/index.js';
import { helpText, onpremConfig, resolveSettings, StartupError, type OnpremConfig, type Settings } from './config.js';
import { refuseSocket } from './http.js';
import { supervisorLogLine, type LogLevel } from './log.js';
import { isToSupervisor, stopReading, type MetricsJson, type ToSupervisor, type ToWorker } from './ipc.js';
import { IdleTrim } from './memory.js';
import { lockDataDir, prepareDataDir, probePort, workerCount } from './preflight.js';

/**
 * Over 400 lines on purpose: one state machine over the worker slots (start, the readiness map, restarts, the
 * standby, hand-off relay, metrics gathering, drain), whose every branch reads the same slot states; the checks
 * before any worker exists are in preflight.ts.
 *
 * The supervisor: checks everything it can before any worker exists (settings, data directory, port), starts
 * one worker process per core, relays connection hand-offs between workers, restarts a worker that dies,
 * gathers metrics, and drains everything on SIGTERM. It never touches a user's data or a client's bytes.
 */

/**
 * Next to this module and with its extension: dist/onprem/worker-main.js when the server runs built (always in
 * production); onprem/worker-main.ts when a developer runs the source through a loader, whose flags the
 * workers inherit (process.execArgv).
 */
const HERE = fileURLToPath(import.meta.url);
const WORKER_ENTRY = join(dirname(HERE), `worker-main${extname(HERE)}`);
/**
 * Node flags for the workers: the supervisor's own (process.execArgv; NODE_OPTIONS reaches them through the
 * environment), plus the young-generation cap (IRIS_SEMI_SPACE_MB). V8 otherwise grows each worker's young
 * generation to 2 x 64 MiB on a large machine under any sustained allocation (a burst of connects, or
 * messaging) and keeps it: a per-process cost that docs/ARCHITECTURE.onprem.md "Memory" measures against its
 * GC cost.
 */
export function workerExecArgv(semiSpaceMb: number, execArgv: readonly string[] = process.execArgv): string[] {
  const out = [...execArgv];
  // Last one wins, over NODE_OPTIONS and the supervisor's own flags alike.
  if (semiSpaceMb > 0) out.push(`--max-semi-space-size=${semiSpaceMb}`);
  return out;
}

interface Slot {
  id: number;
  child: ChildProcess | null;
  ready: boolean;
  /** The last ready_map generation this worker confirmed it applied. */
  seen: number;
  /** Its storage refuses writes (disk full). */
  storageFull: boolean;
  restarts: number[];
  restartTimer: ReturnType<typeof setTimeout> | null;
}

/**
 * One log entry, one JSON line (onprem/log.ts). Written whatever IRIS_LOG says: they are few (start-up,
 * restarts, drain) and tools read them (scripts/bench/kill.ts times restarts by them).
 */
function say(level: LogLevel, msg: string, error?: unknown): void {
  process.stderr.write(`${supervisorLogLine(level, msg, error)}\n`);
}

export class Supervisor {
  private readonly slots: Slot[] = [];
  private draining = false;
  private started = false;
  private readonly registry = new Registry();
  private readonly restartsMetric: Counter<'worker'>;
  private readonly readyMetric: Gauge;
  private readonly handoffs: Counter<'result'>;
  private readonly storageFullMetric: Gauge;
  private nextRid = 1;
  private readonly scrapes = new Map<number, { want: number; got: MetricsJson[]; done: (m: MetricsJson[]) => void }>();
  private exitCode = 0;
  private onAllExited: (() => void) | null = null;
  /** Generation of the last ready_map sent to the workers. */
  private gen = 0;
  /** Called whenever a worker confirms a ready_map: start() and restarts wait for every worker to have it. */
  private onSeen: (() => void) | null = null;
  /** Workers that came back and are not announced yet (announced once every worker routes to them). */
  private readonly returning = new Set<number>();
  /** Hand-offs grow the supervisor's heap in bursts too (onprem/memory.ts). */
  private readonly idleTrim: IdleTrim;
  /**
   * IRIS_STANDBY_WORKER=1: a worker process forked ahead of need, Node booted and its modules loaded, waiting
   * for an init. A worker that dies is replaced by it, so the restart costs the storage open and the listen
   * (ms) instead of Node's start-up and module loading (docs/BENCHMARKS.md "Recovery").
   */
  private standby: ChildProcess | null = null;
  private standbyTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    readonly cfg: OnpremConfig,
    readonly settings: Settings,
    readonly workers: number,
  ) {
    const registers = [this.registry];
    this.restartsMetric = new Counter({ name: 'iris_worker_restarts_total', help: 'Worker processes restarted after they died', labelNames: ['worker'], registers });
    this.readyMetric = new Gauge({ name: 'iris_workers_ready', help: 'Worker processes up and serving', registers });
    this.storageFullMetric = new Gauge({ name: 'iris_workers_storage_full', help: 'Workers whose storage refuses writes (disk full)', registers });
    this.handoffs = new Counter({ name: 'iris_handoffs_total', help: 'Sockets relayed from the accepting worker to the owning worker, by result', labelNames: ['result'], registers });
    this.idleTrim = new IdleTrim(cfg.idleGcMs);
    for (let i = 0; i < workers; i++) this.slots.push({ id: i, child: null, ready: false, seen: 0, storageFull: false, restarts: [], restartTimer: null });
  }

  /** Starts every worker; resolves when all are ready, rejects (after stopping them) if any fails. */
  async start(): Promise<void> {
    const startup = new Promise<void>((resolve, reject) => {
      let ready = 0;
      const timer = setTimeout(() => reject(new StartupError('workers did not become ready within 60 s')), 60_000);
      for (const slot of this.slots) {
        this.spawn(slot, {
          ready: () => {
            if (++ready === this.workers) {
              clearTimeout(timer);
              resolve();
            }
          },
          fail: (msg) => {
            clearTimeout(timer);
            reject(new StartupError(`worker ${slot.id}: ${msg}`));
          },
        });
      }
    });
    try {
      await startup;
    } catch (e) {
      await this.killAll();
      throw e;
    }
    this.started = true;
    this.idleTrim.start();
    // Every worker must have applied the map in which all are up before we say ready: until a worker has, it
    // refuses connects for users of the others with 503 (the owner looks down to it).
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        timer = setTimeout(() => reject(new StartupError('workers did not confirm readiness within 60 s')), 60_000);
        this.onSeen = () => {
          if (!this.isReady()) return;
          this.onSeen = null;
          resolve();
        };
        this.broadcastReady();
      });
    } catch (e) {
      this.onSeen = null;
      await this.killAll();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    this.scheduleStandby(0);
  }

  /** Ready: every worker up, every worker routing by a map that says so, none draining. */
  isReady(): boolean {
    return !this.draining && this.slots.every((s) => s.ready && s.seen === this.gen);
  }

  private forkWorker(label: string): ChildProcess {
    return fork(WORKER_ENTRY, [], {
      execArgv: workerExecArgv(this.cfg.semiSpaceMb),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: { ...process.env, IRIS_ONPREM_WORKER: label },
    });
  }

  /** Forks the spare after `delayMs` (not at once after a restart: the restarted worker needs the CPU). */
  private scheduleStandby(delayMs: number): void {
    if (!this.cfg.standbyWorker || this.draining || this.standby || this.standbyTimer) return;
    this.standbyTimer = setTimeout(() => {
      this.standbyTimer = null;
      if (this.draining || this.standby) return;
      const child = this.forkWorker('standby');
      this.standby = child;
      child.once('exit', () => {
        if (this.standby !== child) return; // adopted: its slot's exit handler owns it now
        this.standby = null;
        // A spare that dies on its own is replaced, slowly: a crash loop must not keep a core busy.
        this.scheduleStandby(5000);
      });
    }, delayMs);
  }

  /** The spare, if one is up: it becomes a worker now and another spare follows later. */
  private takeStandby(): ChildProcess | null {
    const child = this.standby;
    if (!child || !child.connected || child.exitCode !== null || child.signalCode !== null) return null;
    this.standby = null;
    this.scheduleStandby(2000);
    return child;
  }

  private stopStandby(signal: NodeJS.Signals): void {
    if (this.standbyTimer) clearTimeout(this.standbyTimer);
    this.standbyTimer = null;
    const child = this.standby;
    this.standby = null;
    // Its worker code has no state yet: SIGTERM makes it exit at once (runWorker's drain with no worker).
    child?.kill(signal);
  }

  private spawn(slot: Slot, startup?: { ready: () => void; fail: (msg: string) => void }): void {
    // Only restarts take the spare: at start-up every worker is forked at once anyway.
    const child = (startup ? null : this.takeStandby()) ?? this.forkWorker(String(slot.id));
    slot.child = child;
    slot.ready = false;
    let fatal: string | null = null;
    child.on('message', (m: unknown, handle: unknown) => {
      if (!isToSupervisor(m)) return;
      if (m.t === 'ready') {
        slot.ready = true;
        if (startup) startup.ready();
        else {
          say('info', `worker ${slot.id} started (pid ${child.pid}); waiting for every worker to route to it`);
          this.returning.add(slot.id);
          this.broadcastReady();
        }
        return;
      }
      if (m.t === 'ready_seen') {
        if (m.gen > slot.seen) slot.seen = m.gen;
        this.seenChanged();
        return;
      }
      if (m.t === 'fatal') {
        fatal = m.message;
        return;
      }
      this.onMessage(slot, m, handle);
    });
    child.on('error', (e) => {
      fatal ??= e.message;
    });
    child.on('exit', (code, signal) => {
      if (slot.child !== child) return;
      slot.child = null;
      const wasReady = slot.ready;
      slot.ready = false;
      slot.seen = 0;
      if (slot.storageFull) {
        slot.storageFull = false;
        this.storageFullMetric.set(this.slots.filter((s) => s.storageFull).length);
      }
      if (this.draining) {
        if (this.slots.every((s) => s.child === null)) this.onAllExited?.();
        return;
      }
      if (!this.started) {
        startup?.fail(fatal ?? `exited during start-up (${signal ?? `code ${code}`})`);
        return;
      }
      if (wasReady) this.broadcastReady();
      say('error', `worker ${slot.id} (pid ${child.pid}) died (${signal ?? `code ${code}`}${fatal ? `: ${fatal}` : ''}); restarting`);
      this.scheduleRestart(slot);
    });
    child.send({ t: 'init', id: slot.id, workers: this.workers, settings: this.settings } satisfies ToWorker);
  }

  /** Restarts at once the first time; a worker that keeps dying is restarted with growing delays (max 5 s). */
  private scheduleRestart(slot: Slot): void {
    const now = Date.now();
    slot.restarts = slot.restarts.filter((t) => now - t < 60_000);
    slot.restarts.push(now);
    this.restartsMetric.inc({ worker: String(slot.id) });
    const delay = slot.restarts.length <= 1 ? 0 : Math.min(5000, 100 * 2 ** (slot.restarts.length - 2));
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      if (!this.draining) this.spawn(slot);
    }, delay);
  }

  private broadcastReady(): void {
    const ready = this.slots.map((s) => s.ready);
    this.readyMetric.set(ready.filter(Boolean).length);
    const gen = ++this.gen;
    for (const s of this.slots) if (s.child?.connected) s.child.send({ t: 'ready_map', ready, gen } satisfies ToWorker);
  }

  /** A worker confirmed a ready_map: announce workers that are back once everyone routes to them. */
  private seenChanged(): void {
    this.onSeen?.();
    if (this.returning.size > 0 && this.isReady()) {
      for (const id of this.returning) say('info', `worker ${id} is back (pid ${this.slots[id]?.child?.pid})`);
      this.returning.clear();
    }
  }

  /**
   * Passes a client's socket on to worker `to` (a hand-off: SCM_RIGHTS), or `refuse`s it when that worker is not
   * up or the send fails. Node gave us a net.Socket that already reads; this process must never consume the
   * client's bytes (the owner may answer before our copy of the descriptor is closed): it stops reading at once,
   * before the event loop polls again. And an error on it must not take the supervisor down.
   */
  private passSocket(to: number, msg: ToWorker, handle: unknown, refuse: (socket: Socket) => void): void {
    const socket = handle as Socket | undefined;
    if (!socket) return;
    stopReading(socket);
    socket.on('error', () => socket.destroy());
    const slot = this.slots[to];
    if (!slot?.child?.connected || !slot.ready || this.draining) {
      this.handoffs.inc({ result: 'unavailable' });
      refuse(socket);
      return;
    }
    slot.child.send(msg, socket, { keepOpen: false }, (e) => {
      if (e) {
        this.handoffs.inc({ result: 'failed' });
        refuse(socket);
      } else this.handoffs.inc({ result: 'ok' });
    });
  }

  private onMessage(from: Slot, m: ToSupervisor, handle: unknown): void {
    switch (m.t) {
      case 'handoff': {
        const refuse = (socket: Socket) =>
          refuseSocket(socket, { status: 503, code: 'unavailable', message: 'the shard of this user is restarting; retry', headers: { 'retry-after': '1' } });
        this.passSocket(m.to, { t: 'handoff', user: m.user, head: m.head, rest: m.rest, from: m.from }, handle, refuse);
        return;
      }
      case 'v1_handoff':
        // The v1 gateway's socket hand-off (gateway/v1/gateway.ts): no HTTP refusal to give (the client speaks v1;
        // it sees the close and logs in again).
        this.passSocket(m.to, { t: 'v1_handoff', handoff: m.handoff }, handle, (socket) => socket.destroy());
        return;
      case 'readyz':
        from.child?.send({
          t: 'readyz_res',
          rid: m.rid,
          ready: this.isReady() && !this.slots.some((s) => s.storageFull),
          workers: this.slots.map((s) => s.ready && s.seen === this.gen),
          storageFull: this.slots.filter((s) => s.storageFull).map((s) => s.id),
        } satisfies ToWorker);
        return;
      case 'storage':
        if (from.storageFull !== m.full) {
          from.storageFull = m.full;
          this.storageFullMetric.set(this.slots.filter((s) => s.storageFull).length);
        }
        return;
      case 'gather':
        void this.gather().then(
          (text) => from.child?.send({ t: 'gathered', rid: m.rid, text, contentType: this.registry.contentType } satisfies ToWorker),
          () => from.child?.send({ t: 'gathered', rid: m.rid, text: '', contentType: 'text/plain' } satisfies ToWorker),
        );
        return;
      case 'metrics_res': {
        const s = this.scrapes.get(m.rid);
        if (!s) return;
        s.got.push(m.metrics);
        if (s.got.length >= s.want) s.done(s.got);
        return;
      }
      default:
        return;
    }
  }

  /** Every live worker's registry plus the supervisor's, merged (series stay apart by their worker label). */
  private async gather(): Promise<string> {
    const live = this.slots.filter((s) => s.child?.connected && s.ready);
    const rid = this.nextRid++;
    const parts = await new Promise<MetricsJson[]>((resolve) => {
      const timer = setTimeout(() => {
        const s = this.scrapes.get(rid);
        this.scrapes.delete(rid);
        resolve(s?.got ?? []);
      }, 3000);
      const done = (m: MetricsJson[]) => {
        clearTimeout(timer);
        this.scrapes.delete(rid);
        resolve(m);
      };
      this.scrapes.set(rid, { want: live.length, got: [], done });
      if (live.length === 0) done([]);
      for (const s of live) s.child!.send({ t: 'metrics_req', rid } satisfies ToWorker);
    });
    parts.push(await this.registry.getMetricsAsJSON());
    return AggregatorRegistry.aggregate(parts).metrics();
  }

  /** SIGTERM: every worker stops accepting, commits, closes its sockets with 1001 and exits; then we exit 0. */
  async drain(): Promise<number> {
    if (this.draining) return this.exitCode;
    this.draining = true;
    this.idleTrim.stop();
    this.stopStandby('SIGTERM');
    for (const s of this.slots) if (s.restartTimer) clearTimeout(s.restartTimer);
    const allExited = new Promise<void>((resolve) => {
      this.onAllExited = resolve;
      if (this.slots.every((s) => s.child === null)) resolve();
    });
    for (const s of this.slots) {
      if (s.child?.connected) s.child.send({ t: 'drain' } satisfies ToWorker);
      else s.child?.kill('SIGTERM');
    }
    const timedOut = await Promise.race([
      allExited.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), this.cfg.drainTimeoutMs + 2000).unref()),
    ]);
    if (timedOut) {
      say('error', 'workers did not drain in time; killing them');
      this.exitCode = 1;
      for (const s of this.slots) s.child?.kill('SIGKILL');
    }
    return this.exitCode;
  }

  private async killAll(): Promise<void> {
    this.draining = true;
    this.stopStandby('SIGKILL');
    const exits = this.slots
      .filter((s) => s.child !== null)
      .map((s) => new Promise<void>((r) => {
        s.child!.once('exit', () => r());
        s.child!.kill('SIGKILL');
      }));
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5000))]);
  }

  /** Second signal during a drain: SIGKILL every worker; the drain then ends with exit code 1. */
  killNow(): void {
    this.exitCode = 1;
    this.stopStandby('SIGKILL');
    for (const s of this.slots) s.child?.kill('SIGKILL');
  }

  pids(): (number | undefined)[] {
    return this.slots.map((s) => s.child?.pid);
  }
}

/** The CLI: resolves settings, checks, starts, waits for SIGTERM / SIGINT. Returns the exit code. */
export async function runSupervisor(argv: string[]): Promise<number> {
  let release: (() => void) | null = null;
  try {
    const { settings, help } = resolveSettings(argv, process.env, process.cwd());
    if (help) {
      process.stdout.write(helpText() + '\n');
      return 0;
    }
    const cfg = onpremConfig(settings);
    prepareDataDir(cfg);
    release = lockDataDir(cfg);
    const workers = workerCount(cfg);
    const port = await probePort(cfg.host, cfg.port);
    const resolved: Settings = { ...settings, IRIS_PORT: String(port), IRIS_WORKERS: String(workers), IRIS_DATA_DIR: cfg.dataDir, IRIS_RUN_DIR: cfg.runDir };
    const finalCfg = onpremConfig(resolved);
    if (finalCfg.devAuth) {
      say('warn', `*** DEVELOPMENT MODE: ${DEV_AUTH_WARNING}.`);
      say('warn', `*** The secret is "${DEV_SECRET}". Set a real key and drop IRIS_DEV_MODE before this listens on anything but loopback.`);
    } else if (finalCfg.devModeIgnored) {
      say('warn', 'IRIS_DEV_MODE=1 is ignored: a key is configured, so the development secret is not accepted');
    }
    const sup = new Supervisor(finalCfg, resolved, workers);
    let stopping: Promise<number> | null = null;
    const stop = (sig: string) => {
      if (stopping) {
        // A second signal while draining: stop waiting.
        say('warn', `${sig} again: killing the workers`);
        sup.killNow();
        return;
      }
      say('info', `${sig}: draining`);
      stopping = sup.drain();
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => stop('SIGHUP'));
    await sup.start();
    const scheme = finalCfg.tls ? 'wss' : 'ws';
    const hostForUrl = finalCfg.host.includes(':') ? `[${finalCfg.host}]` : finalCfg.host;
    // Printed only once every worker is up and routes connects to every other: a connect made after this
    // line succeeds on the first try, whichever worker accepts it and whoever owns the user.
    process.stdout.write(
      `iris-onprem ready: listening on ${scheme}://${hostForUrl}:${port}/v1/connect (${workers} workers, pids ${sup.pids().join(',')}, ` +
        `data ${finalCfg.dataDir}, route ${finalCfg.route})\n`,
    );
    // Stay up until a signal starts the drain.
    const code = await new Promise<number>((resolve) => {
      const check = setInterval(() => {
        if (stopping) {
          clearInterval(check);
          void stopping.then(resolve);
        }
      }, 50);
    });
    say(code === 0 ? 'info' : 'warn', code === 0 ? 'stopped' : 'stopped (forced)');
    return code;
  } catch (e) {
    // A start-up error is a sentence for the operator; anything else is a bug, described in `error`.
    if (e instanceof StartupError) say('error', e.message);
    else say('error', 'failed', e);
    return 1;
  } finally {
    release?.();
  }
}
