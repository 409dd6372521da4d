import { headers } from '@nats-io/transport-node';
import { AppendUnknownError, FencedError } from './errors.js';
import { isWrongLastSequence, type ClusterConn } from './nats.js';
import { backoff, retryable, withRetry } from './retry.js';

/**
 * The log of one partition (issue 13): every durable change of the partition is a record on ONE subject,
 * `iris.p.<partition>`, of the replicated stream (R3). The stream orders the records and keeps them on a quorum
 * of servers before it acks, so an acked append survives the loss of any one server.
 *
 * Fencing: every append carries Nats-Expected-Last-Subject-Sequence = the last sequence this writer knows for the
 * subject. If anyone else appended since (a new owner, after our lease lapsed), the server refuses with "wrong
 * last sequence" and nothing is written: the stale owner is fenced by its FIRST append, whatever its clock or
 * lease says. A new owner makes that happen at once by appending a `claim` record as soon as it has replayed.
 *
 * Idempotency: every append carries Nats-Msg-Id. An append whose answer was lost is sent again with the same id
 * and the same expectation; inside the stream's duplicate window the server answers "duplicate" with the
 * original sequence (it checks the id before the expectation, measured on 2.9.10), so a retry never writes twice.
 *
 * Appends of one partition are serialized: the expected sequence of the next depends on the stream sequence of
 * the previous one, which is known only from its ack. Throughput comes from batching (one record per group
 * commit, cluster/storage.ts) and from the partitions running in parallel.
 */

/** 'restore': the marker a restore (cluster/restore.ts) leaves as a restored partition's only record; applies nothing. */
export type RecordKind = 'change' | 'claim' | 'restore';

export interface LogRecord {
  seq: number;
  kind: RecordKind;
  id: string;
  data: Uint8Array;
}

export interface LogOptions {
  /**
   * How long an append (or a read) keeps being retried, with the same id and expectation, when no answer comes
   * or nobody answers. Default 10000 ms. Measured on 2.9.10: the first request after the client reconnected to
   * another server is sometimes lost, and while a killed stream leader is replaced (about 1-3 s) publishes get
   * "no responders" at once.
   */
  retryForMs?: number;
  /** How long one attempt waits for the ack. Default 2000 ms. */
  timeoutMs?: number;
}

export class PartitionLog {
  /** Stream sequence of the partition's last record as this writer knows it (0: the subject is empty). */
  lastSeq = 0;
  private fenced: Error | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  readonly subject: string;

  constructor(
    readonly conn: ClusterConn,
    readonly partition: number,
    private readonly opts: LogOptions = {},
  ) {
    this.subject = `${conn.setup.names.logSubject}.${partition}`;
  }

  /** Set once an append was refused or lost: this writer may not append again. */
  get fencedBy(): Error | null {
    return this.fenced;
  }

  /** The subject's last sequence on the servers now (0 when it has no record). */
  async head(): Promise<number> {
    const m = await this.conn.jsm.streams.getMessage(this.conn.setup.names.logStream, { last_by_subj: this.subject });
    return m?.seq ?? 0;
  }

  /** Appends one record after every earlier append of this writer; resolves with its sequence once JetStream acked it. */
  append(data: Uint8Array, id: string, kind: RecordKind = 'change'): Promise<number> {
    const next = this.queue.then(() => this.appendNow(data, id, kind));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async appendNow(data: Uint8Array, id: string, kind: RecordKind): Promise<number> {
    if (this.fenced) throw this.fenced;
    const h = headers();
    h.set('Iris-Kind', kind);
    const until = performance.now() + (this.opts.retryForMs ?? 10_000);
    let last: unknown;
    for (let i = 0; i === 0 || performance.now() < until; i++) {
      if (i > 0) await backoff(i);
      try {
        const ack = await this.conn.js.publish(this.subject, data, {
          msgID: id,
          expect: { lastSubjectSequence: this.lastSeq },
          headers: h,
          timeout: this.opts.timeoutMs ?? 2000,
        });
        this.lastSeq = ack.seq;
        return ack.seq;
      } catch (e) {
        if (isWrongLastSequence(e)) {
          this.fenced = new FencedError(`partition ${this.partition}: another writer appended after seq ${this.lastSeq}`, this.partition, { cause: e });
          throw this.fenced;
        }
        if (!retryable(e)) {
          last = e;
          break;
        }
        last = e;
      }
    }
    this.fenced = new AppendUnknownError(`partition ${this.partition}: no answer to append ${id}`, this.partition, { cause: last });
    throw this.fenced;
  }

  /**
   * Appends a claim: after replaying to the head, a new owner writes this so that a stale owner's next append
   * (expecting the old head) is refused. Rejects with FencedError if someone appended since the replay.
   */
  claim(node: string, leaseRevision: number): Promise<number> {
    const data = new TextEncoder().encode(JSON.stringify({ node, lease: leaseRevision }));
    return this.append(data, `claim.${this.partition}.${node}.${leaseRevision}.${this.lastSeq}`, 'claim');
  }

  /**
   * Calls apply for every record after `fromSeq` up to the subject's head as of the call, in order, and sets
   * lastSeq to that head. Reads with the stream leader's message-get (`next_by_subj`), one request per record:
   * no consumer, so a replay needs neither the metadata leader nor a consumer placed on a peer (measured on
   * 2.9.10: right after a server's kill -9 a new R1 consumer can be placed on the dead peer and its create
   * times out), and never a follower's possibly stale copy (as a direct get could). ~0.45 ms per record on
   * loopback; snapshots keep tails short.
   */
  async replay(fromSeq: number, apply: (r: LogRecord) => void): Promise<number> {
    const head = await this.retry(() => this.head());
    const stream = this.conn.setup.names.logStream;
    let seq = fromSeq;
    while (seq < head) {
      const query = { next_by_subj: this.subject, seq: seq + 1 };
      // The 2.9 server accepts next_by_subj on STREAM.MSG.GET; the client's type names it for direct gets only.
      const m = await this.retry(() => this.conn.jsm.streams.getMessage(stream, query as unknown as { seq: number }));
      if (!m || m.seq > head) break;
      apply({ seq: m.seq, kind: (m.header?.get('Iris-Kind') as RecordKind) || 'change', id: m.header?.get('Nats-Msg-Id') ?? '', data: m.data });
      seq = m.seq;
    }
    this.lastSeq = Math.max(head, fromSeq);
    return this.lastSeq;
  }

  /** A read retried like an append (the same lost first request, the same leader election). */
  private retry<T>(fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, this.opts.retryForMs ?? 10_000);
  }

  /** Removes the partition's records below `seq` (covered by a snapshot). The last record always stays. */
  async purgeBefore(seq: number): Promise<void> {
    // Never seq <= 1: the 2.9 server reads a purge bound of 1 as "no bound" and empties the subject.
    if (Math.min(seq, this.lastSeq) <= 1) return;
    await this.conn.jsm.streams.purge(this.conn.setup.names.logStream, { filter: this.subject, seq: Math.min(seq, this.lastSeq) });
  }
}
