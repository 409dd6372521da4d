import type { LogLevel } from '../core/ports.js';
import type { ToWorker } from './ipc.js';
import { describeError, formatArgs } from './log.js';
import { send } from './worker/control.js';
import { Worker, writeLog } from './worker/worker.js';

/**
 * The life of one worker process, forked by the supervisor (onprem/worker-main.ts is its entry): wait for the
 * init message, start the Worker (onprem/worker/), report ready or fatal, and drain and exit when asked, when a
 * signal comes or when the supervisor is gone. What a worker does meanwhile is in onprem/worker/worker.ts.
 */

/** Entry of a worker process: waits for its init message, starts, reports ready (or fatal) to the supervisor. */
export async function runWorker(): Promise<void> {
  const { onpremConfig } = await import('./config.js');
  const { isToWorker } = await import('./ipc.js');
  let worker: Worker | null = null;
  let exiting = false;
  const pending: { m: ToWorker; h: unknown }[] = [];
  // The core logs through its Logger port (Worker.log); libraries may still use console, with Error objects
  // that console prints with multi-line stacks: route it through the one-line, rate-limited worker log too.
  const envId = Number(process.env['IRIS_ONPREM_WORKER']);
  const id: number | string = Number.isInteger(envId) ? envId : '?';
  const viaLog = (level: LogLevel) => (...args: unknown[]) => {
    if (worker) worker.log(level, formatArgs(args));
    else writeLog(id, level, formatArgs(args));
  };
  console.error = viaLog('error');
  console.warn = viaLog('warn');
  console.info = viaLog('info');
  console.log = viaLog('info');
  // A bug that escapes everything: one line, then die (the supervisor restarts the worker).
  process.on('uncaughtException', (e) => {
    writeLog(id, 'error', `uncaught exception, exiting: ${describeError(e)}`);
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    writeLog(id, 'error', `unhandled rejection, exiting: ${describeError(e)}`);
    process.exit(1);
  });

  const drainAndExit = async (why: string) => {
    if (exiting) return;
    exiting = true;
    if (!worker) process.exit(0);
    worker.log('info', `draining (${why})`);
    const hard = setTimeout(() => process.exit(1), worker.cfg.drainTimeoutMs).unref();
    try {
      await worker.drain();
    } catch (e) {
      worker.log('error', `drain failed: ${describeError(e)}`);
    }
    clearTimeout(hard);
    await send({ t: 'drained' }).catch(() => undefined);
    process.exit(0);
  };

  process.on('message', (m: unknown, handle: unknown) => {
    if (!isToWorker(m)) return;
    if (m.t === 'init') {
      void start(m);
      return;
    }
    if (m.t === 'drain') return void drainAndExit('supervisor asked');
    if (!worker) {
      pending.push({ m, h: handle });
      return;
    }
    worker.onSupervisor(m, handle);
  });
  // The supervisor is gone (killed): never linger holding the port and the data.
  process.on('disconnect', () => void drainAndExit('supervisor disconnected'));
  // Signals go to the supervisor; a worker waits for its drain message (Ctrl-C or a terminal hang-up reaches
  // the whole group; the supervisor drains on both, and a worker killed by SIGHUP's default would not drain).
  process.on('SIGINT', () => undefined);
  process.on('SIGHUP', () => undefined);
  process.on('SIGTERM', () => void drainAndExit('SIGTERM'));

  async function start(init: Extract<ToWorker, { t: 'init' }>): Promise<void> {
    const cfg = onpremConfig(init.settings);
    const w = new Worker(init.id, init.workers, cfg);
    try {
      await w.start();
    } catch (e) {
      await send({ t: 'fatal', message: (e as Error).message }).catch(() => undefined);
      process.exit(1);
    }
    worker = w;
    for (const p of pending.splice(0)) w.onSupervisor(p.m, p.h);
    await send({ t: 'ready' }).catch(() => process.exit(1));
  }
}
