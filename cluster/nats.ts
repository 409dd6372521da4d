import { jetstream, jetstreamManager, JetStreamApiError, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { withRetry } from './retry.js';

/**
 * The JetStream objects of a cluster (issue 13) and how a node connects to them. Everything here stays within
 * nats-server 2.9 (the version Debian ships): R3 file streams, per-subject compare-and-set
 * (Nats-Expected-Last-Subject-Sequence), Nats-Msg-Id dedup, KV buckets with revisions, purge by subject and
 * sequence. No per-message TTL, no atomic batch publish, no multi-filter consumers (2.10+).
 *
 * Subjects are per PARTITION, never per user or device: the server keeps every subject's state (and every
 * message id inside the dedup window) in memory, so their number must stay bounded by the partition count.
 */

export interface ClusterNames {
  /** The partition log: one subject per partition, `${logSubject}.<partition>`. */
  logStream: string;
  logSubject: string;
  /** Snapshots of partitions' local views: chunks on `${snapSubject}.<partition>.c`, then a manifest on `.m`. */
  snapStream: string;
  snapSubject: string;
  /** KV bucket of the partition leases (keys `p.<partition>`). */
  leaseBucket: string;
}

export const DEFAULT_NAMES: ClusterNames = {
  logStream: 'IRIS_LOG',
  logSubject: 'iris.p',
  snapStream: 'IRIS_SNAP',
  snapSubject: 'iris.s',
  leaseBucket: 'iris_leases',
};

export interface ClusterSetup {
  /** Replicas of the streams and the bucket (3 in production; the tests use the real 3-server cluster too). */
  replicas: number;
  /** How long the log remembers a Nats-Msg-Id (the window inside which a retried append is answered "duplicate"). */
  dedupWindowMs: number;
  names: ClusterNames;
}

export const DEFAULT_SETUP: ClusterSetup = { replicas: 3, dedupWindowMs: 120_000, names: DEFAULT_NAMES };

export interface ClusterConn {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  leases: KV;
  setup: ClusterSetup;
}

/** Connects to the NATS servers (any of them; the client fails over between them) and opens the cluster's objects. */
export async function connectCluster(servers: string[], setup: ClusterSetup = DEFAULT_SETUP, name?: string): Promise<ClusterConn> {
  // noAsyncTraces: otherwise every request (each log append is one: a JetStream publish) builds two Errors up
  // front, a RequestError and a TimeoutError, only to have their stacks ready should it fail; profiled at ~5% of a
  // loaded node's CPU (docs/BENCHMARKS.md#cluster-e2e). Failures keep their types and messages, only not the stack
  // of the caller.
  const nc = await connect({ servers, name, maxReconnectAttempts: -1, reconnectTimeWait: 250, noAsyncTraces: true });
  try {
    return await openCluster(nc, setup);
  } catch (e) {
    await nc.close();
    throw e;
  }
}

/**
 * Creates (idempotently: the same config again is a no-op) the log and snapshot streams and the lease bucket.
 * Right after the servers start, the JetStream metadata layer may still be forming: "insufficient resources" or
 * no responders then mean "not yet", so creation is retried for a bounded time.
 */
export async function openCluster(nc: NatsConnection, setup: ClusterSetup = DEFAULT_SETUP): Promise<ClusterConn> {
  // Short request timeouts, retried: the first request after the client moved to another server (or while the
  // metadata leader is re-elected) is sometimes lost, and waiting 10 s for it is the wrong default here.
  const js = jetstream(nc, { timeout: 2000 });
  const n = setup.names;
  const deadline = Date.now() + 30_000;
  for (let attempt = 0; ; attempt++) {
    try {
      // Inside the retry: creating the manager asks the server for the account's JetStream info.
      const jsm = await jetstreamManager(nc, { timeout: 2000 });
      await jsm.streams.add({
        name: n.logStream,
        subjects: [`${n.logSubject}.*`],
        num_replicas: setup.replicas,
        duplicate_window: setup.dedupWindowMs * 1_000_000,
      });
      await jsm.streams.add({ name: n.snapStream, subjects: [`${n.snapSubject}.>`], num_replicas: setup.replicas });
      // history 1: only the current lease matters; its revision is the compare-and-set token. No direct gets:
      // they may be answered by a lagging follower, and a stale lease read, while never unsafe (every write is
      // a CAS against the leader), makes a contender wait on a revision that is already gone.
      const leases = await new Kvm(js).create(n.leaseBucket, { replicas: setup.replicas, history: 1, allow_direct: false });
      // Connected means usable: right after creation a stream may have no leader yet ("no responders").
      await withRetry(() => leases.get('ready'));
      await withRetry(() => jsm.streams.getMessage(n.logStream, { last_by_subj: `${n.logSubject}.ready` }));
      return { nc, js, jsm, leases, setup };
    } catch (e) {
      if (Date.now() > deadline || !transient(e)) throw e;
      await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
    }
  }
}

function transient(e: unknown): boolean {
  const m = e instanceof Error ? e.message : String(e);
  return /insufficient resources|no responders|timeout|TIMEOUT|not (yet )?(available|enabled)|no suitable peers/i.test(m);
}

/** The server answered "wrong last sequence" (10071): a compare-and-set lost (a KV update or a log append). */
export function isWrongLastSequence(e: unknown): boolean {
  return e instanceof JetStreamApiError && e.code === 10071;
}
