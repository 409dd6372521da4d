import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Metrics } from '../core/ports.js';
import type { ErrorCode } from '../protocol/index.js';
import type { CommitObserver } from './storage.js';

/**
 * Prometheus metrics of one worker process. Every series carries a `worker` label; the supervisor gathers
 * all workers' registries (as JSON over IPC) and serves them merged at /metrics, whichever worker the scrape
 * lands on. docs/OPERATIONS.md explains each one.
 */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly connections: Gauge;
  readonly connectionsTotal: Counter<'via'>;
  readonly refused: Counter<'code'>;
  readonly framesIn: Counter;
  readonly framesOut: Counter;
  readonly accepted: Counter;
  readonly delivered: Counter;
  readonly acks: Counter;
  readonly errors: Counter<'code'>;
  readonly forwardFailures: Counter;
  /** Push webhooks (core/push.ts): calls answered 2xx, calls that failed, pushes dropped after the last attempt. */
  readonly pushes: Counter<'result'>;
  readonly closes: Counter<'code'>;
  readonly serverCloses: Counter<'code'>;
  readonly mailboxes: Gauge;
  readonly linkCalls: Counter<'op' | 'result'>;
  readonly linkLatency: Histogram<'op'>;
  readonly commitBatch: Histogram;
  readonly commitRows: Histogram;
  readonly commitSeconds: Histogram;
  readonly commitFailures: Counter;
  readonly storageFull: Gauge;
  /** Cluster mode: partitions this worker serves now (rebuilt, claimed); a sum below the partition count is an outage. */
  readonly partitionsServed: Gauge;
  readonly idleGcs: Counter;
  readonly idleGcSeconds: Counter;

  constructor(worker: number) {
    const r = this.registry;
    r.setDefaultLabels({ worker: String(worker) });
    collectDefaultMetrics({ register: r, prefix: 'iris_' });
    const registers = [r];
    this.connections = new Gauge({ name: 'iris_connections', help: 'Open client WebSockets on this worker', registers });
    this.connectionsTotal = new Counter({ name: 'iris_connections_opened_total', help: 'Client WebSockets opened, by how they reached their owner (local, handoff, pipe)', labelNames: ['via'], registers });
    this.refused = new Counter({ name: 'iris_connects_refused_total', help: 'Connection attempts refused before the upgrade, by reason (HTTP body code)', labelNames: ['code'], registers });
    this.framesIn = new Counter({ name: 'iris_frames_in_total', help: 'WebSocket messages received from clients', registers });
    this.framesOut = new Counter({ name: 'iris_frames_out_total', help: 'WebSocket messages sent to clients', registers });
    this.accepted = new Counter({ name: 'iris_messages_accepted_total', help: 'Messages accepted (durable, send_ack sent), not counting duplicates', registers });
    this.delivered = new Counter({ name: 'iris_entries_delivered_total', help: 'Inbox entries (messages) pushed to devices', registers });
    this.acks = new Counter({ name: 'iris_deliver_acks_total', help: 'deliver_ack frames that advanced a device cursor', registers });
    this.errors = new Counter({ name: 'iris_errors_total', help: 'Error frames sent to clients, by protocol error code', labelNames: ['code'], registers });
    this.pushes = new Counter({ name: 'iris_push_total', help: 'Push webhook calls by result: sent (2xx), failed (retried), dead_lettered (dropped after IRIS_PUSH_MAX_ATTEMPTS)', labelNames: ['result'], registers });
    this.forwardFailures = new Counter({ name: 'iris_forward_failures_total', help: 'Failed forwards of outbox items to a recipient shard (retried with backoff)', registers });
    this.closes = new Counter({ name: 'iris_closes_total', help: 'Client WebSockets closed, by close code', labelNames: ['code'], registers });
    this.serverCloses = new Counter({ name: 'iris_server_closes_total', help: 'Client WebSockets the server closed, by the close code it sent (4000 hello timeout, 4001 replaced, 4002 too many errors, 4003 slow consumer, ...)', labelNames: ['code'], registers });
    this.mailboxes = new Gauge({ name: 'iris_mailboxes', help: 'User mailboxes held in memory by this worker', registers });
    this.linkCalls = new Counter({ name: 'iris_peer_calls_total', help: 'Calls to other workers (forward, presence, watch, push, typing, group, gpush, gnews, gnote, keys), by result', labelNames: ['op', 'result'], registers });
    this.linkLatency = new Histogram({
      name: 'iris_peer_call_seconds',
      help: 'Round trip of a call to another worker',
      labelNames: ['op'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
      registers,
    });
    this.commitBatch = new Histogram({
      name: 'iris_commit_batch_size',
      help: 'Operations (commit() calls waiting for durability) made durable by one COMMIT',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048],
      registers,
    });
    this.commitRows = new Histogram({
      name: 'iris_commit_rows',
      help: 'Rows changed by one COMMIT',
      buckets: [1, 4, 16, 64, 256, 1024, 4096, 16384],
      registers,
    });
    this.commitSeconds = new Histogram({
      name: 'iris_commit_seconds',
      help: 'Duration of one COMMIT (WAL write + fsync), during which the worker does nothing else',
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers,
    });
    this.storageFull = new Gauge({ name: 'iris_storage_full', help: '1 while this worker refuses writes because its disk (or database) is full', registers });
    this.partitionsServed = new Gauge({ name: 'iris_cluster_partitions_served', help: 'Cluster mode: partitions this worker serves now (summed over every node: the partition count when all are served)', registers });
    this.idleGcs = new Counter({ name: 'iris_idle_gc_total', help: 'Memory-reducing GCs run after a burst, once the worker was quiet (IRIS_IDLE_GC_MS)', registers });
    this.idleGcSeconds = new Counter({ name: 'iris_idle_gc_seconds_total', help: 'Time spent in those GCs (the event loop waits meanwhile)', registers });
    this.commitFailures = new Counter({ name: 'iris_commit_failures_total', help: 'COMMITs that failed (each fails all operations of its batch)', registers });
  }

  /** The core's metrics port. */
  core(): Metrics {
    return {
      accepted: () => this.accepted.inc(),
      delivered: (n) => this.delivered.inc(n),
      acked: () => this.acks.inc(),
      error: (code: ErrorCode) => this.errors.inc({ code }),
      forwardFailed: () => this.forwardFailures.inc(),
      pushSent: () => this.pushes.inc({ result: 'sent' }),
      pushFailed: () => this.pushes.inc({ result: 'failed' }),
      pushDeadLettered: () => this.pushes.inc({ result: 'dead_lettered' }),
    };
  }

  commitObserver(): CommitObserver {
    return {
      committed: (fns, rows, seconds) => {
        this.commitBatch.observe(fns);
        this.commitRows.observe(rows);
        this.commitSeconds.observe(seconds);
      },
      failed: () => this.commitFailures.inc(),
    };
  }
}
