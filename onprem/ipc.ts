import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { Socket } from 'node:net';
import type { Settings } from './config.js';

/**
 * Control messages between the supervisor and its workers, over the child_process IPC channel (JSON). This is
 * the control plane only: start-up, readiness, metrics scrapes, drain, and the hand-off of an accepted socket
 * (the socket itself travels as the message's handle, SCM_RIGHTS). Messages between users never use it; they
 * go over the workers' unix sockets (links.ts).
 */

/** The parts of the upgrade request the owning worker needs to finish the WebSocket handshake. */
export interface UpgradeHead {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  remote: string;
}

/** What travels with a v1 socket to its owner (gateway/v1/gateway.ts): who logged in, and the bytes read after it. */
export interface V1Handoff {
  user: string;
  transport: 'tcp' | 'ws';
  /** The verified token's claims (core/revocation.ts claimsHeader), empty for an anonymous LOGIN. */
  claims: string;
  /** base64: v1 packet bytes after the LOGIN; socket bytes not yet decoded (WebSocket framing). */
  packets: string;
  raw: string;
  trace: string;
}

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

export type ToWorker =
  | { t: 'init'; id: number; workers: number; settings: Settings }
  /** Which workers are up (index = worker id); sent on every change, numbered: the worker answers ready_seen. */
  | { t: 'ready_map'; ready: boolean[]; gen: number }
  /** Answer to a worker's readyz question: the supervisor's view, the one source of truth for readiness. */
  | { t: 'readyz_res'; rid: number; ready: boolean; workers: boolean[]; storageFull: number[] }
  /** A connection for a user this worker owns, authenticated by the worker that accepted it. */
  | { t: 'handoff'; user: string; head: UpgradeHead; rest: string; from: number }
  /** A v1 gateway connection (gateway/v1/) for a user this worker owns, logged in at the worker that accepted it. */
  | { t: 'v1_handoff'; handoff: V1Handoff }
  | { t: 'metrics_req'; rid: number }
  | { t: 'gathered'; rid: number; text: string; contentType: string }
  | { t: 'drain' };

export type ToSupervisor =
  | { t: 'ready' }
  /** The worker applied ready_map `gen`: from now on it routes connects by it. */
  | { t: 'ready_seen'; gen: number }
  /** GET /readyz reached this worker: is the whole server ready? */
  | { t: 'readyz'; rid: number }
  /** This worker's storage refuses writes (disk full), or accepts them again. */
  | { t: 'storage'; full: boolean }
  | { t: 'fatal'; message: string }
  | { t: 'handoff'; to: number; user: string; head: UpgradeHead; rest: string; from: number }
  | { t: 'v1_handoff'; to: number; handoff: V1Handoff }
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

/**
 * Stops a socket's handle from reading from the kernel, before the socket is handed to another process.
 *
 * Node passes a socket (`process.send(m, socket)`) by sending a duplicate of its file descriptor; the sender's
 * descriptor stays open until the receiver's NODE_HANDLE_ACK comes back, and meanwhile Node only swaps the
 * handle's read callback for a no-op — it does not stop reading. `socket.pause()` does not stop it either
 * (it only stops 'data' events; the handle keeps filling the stream's buffer). So for as long as the old
 * process holds its copy, every byte that arrives on the connection can be read by it and thrown away. That is
 * exactly the window in which the owner has written the `101` and the client sends its `hello`: without this,
 * a few percent of handed-off connections lost their hello and were closed with 4000 after the hello timeout.
 * With reading stopped, the bytes stay in the kernel's socket buffer until the owner reads them.
 *
 * Uses the socket's libuv handle (`_handle.readStop()`, what `net` itself calls when a stream's buffer is
 * full); `reading = false` keeps `net`'s bookkeeping right. Returns false if the handle is not there.
 */
export function stopReading(socket: Socket): boolean {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } | null })._handle;
  if (!handle || typeof handle.readStop !== 'function') return false;
  handle.reading = false;
  handle.readStop();
  return true;
}
