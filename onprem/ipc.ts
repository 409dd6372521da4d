import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Settings } from './config.js';

/**
 * Control messages between the supervisor and its workers, over the child_process IPC channel (JSON). This is
 * the control plane only: start-up, readiness, metrics scrapes, drain, and the hand-over of an accepted socket
 * (the socket itself travels as the message's handle, SCM_RIGHTS). Messages between users never use it; they
 * go over the workers' unix sockets (peers.ts).
 */

/** The parts of the upgrade request the owning worker needs to finish the WebSocket handshake. */
export interface UpgradeHead {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  remote: string;
}

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export type ToWorker =
  | { t: 'init'; id: number; workers: number; settings: Settings }
  /** Which workers are up (index = worker id); sent on every change. */
  | { t: 'ready_map'; ready: boolean[] }
  /** A connection for a user this worker owns, authenticated by the worker that accepted it. */
  | { t: 'handoff'; user: string; head: UpgradeHead; rest: string; from: number }
  | { t: 'metrics_req'; rid: number }
  | { t: 'gathered'; rid: number; text: string; contentType: string }
  | { t: 'drain' };

export type ToSupervisor =
  | { t: 'ready' }
  | { t: 'fatal'; message: string }
  | { t: 'handoff'; to: number; user: string; head: UpgradeHead; rest: string; from: number }
  | { t: 'metrics_res'; rid: number; metrics: MetricsJson }
  /** A worker was scraped at /metrics: gather every worker's registry and answer with the merged text. */
  | { t: 'gather'; rid: number }
  | { t: 'drained' };

export function isToWorker(m: unknown): m is ToWorker {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

export function isToSupervisor(m: unknown): m is ToSupervisor {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
