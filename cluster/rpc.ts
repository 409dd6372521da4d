import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';

/**
 * Reaching the owner of a partition from any node (issue 13): core NATS request/reply (no JetStream, nothing
 * stored) on `iris.rpc.<partition>`. The node serving a partition subscribes to its subject while it serves it
 * and unsubscribes the moment it stops (cluster/node.ts), so the subject's only responder is the current owner;
 * one subject per PARTITION, bounded like the log's.
 *
 * A call that finds nobody ("no responders": the partition is between owners, or its owner just died and the
 * lease has not lapsed yet) or an owner that answers NOT_OWNER (it lost the partition while the request was on
 * its way) is retried with backoff until the caller's deadline; the caller then answers `unavailable`. A call
 * that timed out is NOT retried here: the handler may have run, so only the caller knows whether repeating is
 * safe (forwards are: they carry the sender's outbox numbers, which the recipient dedups).
 */

export const RPC_ERROR = 'Iris-Rpc-Error';
export const NOT_OWNER = 'not_owner';

export type RpcHandler = (data: Uint8Array) => Promise<Uint8Array>;

export class RpcUnavailableError extends Error {
  override readonly name = 'RpcUnavailableError';
  constructor(
    message: string,
    readonly partition: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function rpcSubject(partition: number, prefix = 'iris.rpc'): string {
  return `${prefix}.${partition}`;
}

/**
 * Serves calls for one partition. `serving()` is asked before every call: false (the lease is gone) answers
 * NOT_OWNER, so the caller looks again. Handler errors go back as an error header with the message.
 */
export function servePartition(nc: NatsConnection, partition: number, serving: () => boolean, handler: RpcHandler): Subscription {
  return nc.subscribe(rpcSubject(partition), {
    callback: (err, msg) => {
      if (err) return;
      void answer(msg, serving, handler);
    },
  });
}

async function answer(msg: Msg, serving: () => boolean, handler: RpcHandler): Promise<void> {
  const h = headers();
  if (!serving()) {
    h.set(RPC_ERROR, NOT_OWNER);
    msg.respond(new Uint8Array(0), { headers: h });
    return;
  }
  try {
    msg.respond(await handler(msg.data));
  } catch (e) {
    h.set(RPC_ERROR, e instanceof Error ? e.message || e.name : String(e));
    msg.respond(new Uint8Array(0), { headers: h });
  }
}

export interface CallOptions {
  /** Give up (RpcUnavailableError) after this long without reaching an owner. */
  deadlineMs: number;
  /** Per attempt: how long the owner has to answer. */
  timeoutMs?: number;
  /**
   * The owner may run the call twice: an attempt that times out is sent again (until the deadline) instead of
   * failing. A request already delivered to an owner that then died gets no answer, ever; without this it waits
   * the whole timeout before the caller's own retry finds the new owner.
   */
  idempotent?: boolean;
}

/** Calls the owner of `partition`, wherever it is; resolves with its answer. */
export async function callOwner(nc: NatsConnection, partition: number, data: Uint8Array, opts: CallOptions): Promise<Uint8Array> {
  const until = performance.now() + opts.deadlineMs;
  let last: unknown = null;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) {
      const left = until - performance.now();
      if (left <= 0) throw new RpcUnavailableError(`partition ${partition}: no owner answered within ${opts.deadlineMs} ms`, partition, { cause: last });
      await new Promise((r) => setTimeout(r, Math.min(left, 250, 10 * 2 ** attempt)));
    }
    let reply: Msg;
    try {
      reply = await nc.request(rpcSubject(partition), data, { timeout: opts.timeoutMs ?? 5000 });
    } catch (e) {
      if (!noResponders(e) && !(opts.idempotent === true && timedOut(e))) throw e;
      last = e;
      continue;
    }
    const err = reply.headers?.get(RPC_ERROR);
    if (!err) return reply.data;
    if (err === NOT_OWNER) {
      last = new Error(NOT_OWNER);
      continue;
    }
    throw new Error(`partition ${partition}: the owner failed: ${err}`);
  }
}

function timedOut(e: unknown): boolean {
  return e instanceof Error && (e.name === 'TimeoutError' || /^timeout$/i.test(e.message));
}

function noResponders(e: unknown): boolean {
  for (let x: unknown = e, i = 0; x instanceof Error && i < 5; i++, x = x.cause) {
    if (/no responders/i.test(x.message) || x.name === 'NoRespondersError') return true;
  }
  return false;
}
