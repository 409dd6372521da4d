import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { json, respond } from '../http.js';
import type { ToSupervisor, ToWorker } from '../ipc.js';
import type { WorkerContext } from './context.js';

/**
 * The worker's side of the control channel to its supervisor (child_process IPC, onprem/ipc.ts): which workers
 * are up, and the two questions only the supervisor can answer (is the whole server ready; every worker's
 * metrics). Socket hand-offs travel on the same channel but belong to the listener (worker/listener.ts).
 */

/** One message to the supervisor; rejects when it is gone. A `handle` (a socket) moves to the supervisor. */
export function send(m: ToSupervisor, handle?: Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send || !process.connected) return reject(new Error('no supervisor'));
    const cb = (e: Error | null) => (e ? reject(e) : resolve());
    if (handle) process.send(m, handle, { keepOpen: false }, cb);
    else process.send(m, undefined, undefined, cb);
  });
}

export class SupervisorLink {
  /** Which workers are up (index = worker id), as the supervisor last said; empty while draining. */
  private readyMap: boolean[] = [];
  private readonly gathers = new Map<number, (text: string | null, contentType: string) => void>();
  private readonly readyzWaiters = new Map<number, (r: Extract<ToWorker, { t: 'readyz_res' }>) => void>();
  private nextGather = 1;

  constructor(private readonly ctx: WorkerContext) {}

  /** Whether connections for `worker`'s users may be handed to it now. */
  isUp(worker: number): boolean {
    return this.readyMap[worker] === true;
  }

  /** Draining: route nothing to anyone any more. */
  forget(): void {
    this.readyMap = [];
  }

  /** Every supervisor message except the hand-off of a socket. */
  onMessage(m: Exclude<ToWorker, { t: 'handoff' } | { t: 'v1_handoff' }>): void {
    switch (m.t) {
      case 'ready_map':
        this.readyMap = this.ctx.draining ? [] : m.ready;
        // The supervisor waits for this before it calls the server (or a restarted worker) ready.
        void send({ t: 'ready_seen', gen: m.gen }).catch(() => undefined);
        break;
      case 'readyz_res': {
        const cb = this.readyzWaiters.get(m.rid);
        this.readyzWaiters.delete(m.rid);
        cb?.(m);
        break;
      }
      case 'metrics_req':
        this.ctx.metrics.registry.getMetricsAsJSON().then(
          (metrics) => void send({ t: 'metrics_res', rid: m.rid, metrics }).catch(() => undefined),
          () => void send({ t: 'metrics_res', rid: m.rid, metrics: [] }).catch(() => undefined),
        );
        break;
      case 'gathered': {
        const cb = this.gathers.get(m.rid);
        this.gathers.delete(m.rid);
        cb?.(m.text, m.contentType);
        break;
      }
      default:
        break;
    }
  }

  /** GET /readyz: the supervisor's view decides (it knows which workers are up and which route to which). */
  readyz(res: ServerResponse): void {
    const rid = this.nextGather++;
    const timer = setTimeout(() => {
      this.readyzWaiters.delete(rid);
      json(res, 503, { ready: false, draining: false, workers: null, storageFull: [], error: 'supervisor did not answer' });
    }, 2000);
    this.readyzWaiters.set(rid, (r) => {
      clearTimeout(timer);
      const ready = r.ready && !this.ctx.draining;
      json(res, ready ? 200 : 503, { ready, draining: this.ctx.draining, workers: r.workers, storageFull: r.storageFull });
    });
    send({ t: 'readyz', rid }).catch(() => {
      clearTimeout(timer);
      this.readyzWaiters.delete(rid);
      json(res, 503, { ready: false, draining: this.ctx.draining, workers: null, storageFull: [], error: 'supervisor unreachable' });
    });
  }

  /** GET /metrics: every worker's registry, gathered and merged by the supervisor. */
  metrics(res: ServerResponse): void {
    const rid = this.nextGather++;
    const timer = setTimeout(() => {
      this.gathers.delete(rid);
      respond(res, { status: 503, code: 'unavailable', message: 'metrics gathering timed out' });
    }, 5000);
    this.gathers.set(rid, (text, contentType) => {
      clearTimeout(timer);
      if (text === null) return respond(res, { status: 503, code: 'unavailable', message: 'metrics unavailable' });
      res.writeHead(200, { 'content-type': contentType });
      res.end(text);
    });
    send({ t: 'gather', rid }).catch(() => {
      clearTimeout(timer);
      this.gathers.delete(rid);
      respond(res, { status: 503, code: 'unavailable', message: 'supervisor unreachable' });
    });
  }
}
