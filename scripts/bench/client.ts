/**
 * One client process of the load generator (forked by coordinator.ts; never run by hand). It holds many
 * connections with `ws` and speaks the wire directly — protocol/ binary frames for Iris, raw bytes for the
 * baselines — so its own cost per message stays small next to the server's:
 *
 *   open-loop sender: message j of this process is scheduled at t0 + j / rate and goes to sender j mod S,
 *                     whatever the replies do; its body carries the scheduled time
 *   receiver:         send->deliver latency = arrival - scheduled time; cumulative deliver_ack like a real
 *                     client (one per connection per event-loop turn)
 *   accounting:       a bit per (sender, seq) acked and delivered, so the coordinator can count lost and
 *                     duplicated messages exactly
 *   reconnect (kill mode only): a connection that drops is reopened with backoff; its hello carries the
 *                     connection's cursor (the highest entry seq it processed), so deliveries resume after it;
 *                     every unacked send is written again with the same client id (the server's dedup window
 *                     answers a send it already committed with the original ack), and messages scheduled
 *                     while it is down wait in an outbox and are written after the welcome, like the SDK's
 */
import { WebSocket, type RawData } from 'ws';
import type * as hdr from 'hdr-histogram-js';
import { decodeBinary, encodeBinary, SUBPROTOCOL } from '../../protocol/index.js';
import { mintToken } from '../token.js';
import {
  BODY_HEADER,
  BitSet,
  encodeHist,
  newHist,
  now,
  readF64,
  readU32,
  recordUs,
  sleep,
  writeHeader,
  type AccountMsg,
  type Bucket,
  type ConnSpec,
  type FromClient,
  type InitMsg,
  type PhaseMsg,
  type PhaseResult,
  type ReconnectStats,
  type ToClient,
  type Totals,
} from './common.js';

interface Conn {
  spec: ConnSpec;
  ws: WebSocket | null;
  ready: boolean;
  closed: boolean;
  /** Sender side. */
  seq: number;
  /** Unacked sends: seq -> scheduled time (the body is rebuilt from both for a resend). */
  pending: Map<number, number>;
  acked: BitSet | null;
  errored: number;
  /** Receiver side (iris): highest entry seq seen, and whether an ack is due. */
  lastSeq: number;
  ackDue: boolean;
  /** Kill mode: dropped and being reopened (sends go to `pending` unwritten until the welcome). */
  down: boolean;
  /** Reconnected at least once, and whether its first deliver / send_ack since then was seen. */
  reconnected: boolean;
  sawDeliverSinceReconnect: boolean;
  sawAckSinceReconnect: boolean;
}

interface BucketAcc {
  sent: number;
  acked: number;
  delivered: number;
  deliveredUnaffected: number;
  errors: number;
  hist: hdr.Histogram;
}

interface PhaseState {
  msg: PhaseMsg;
  senders: Conn[];
  next: number;
  interval: number;
  sendingDone: boolean;
  overloaded: boolean;
  scheduledInWindow: number;
  sent: number;
  acked: number;
  delivered: number;
  errored: number;
  deliveredInWindow: number;
  ackHist: hdr.Histogram;
  deliverHist: hdr.Histogram;
  lagHist: hdr.Histogram;
  errors: Record<string, number>;
}

let init: InitMsg | null = null;
const conns: Conn[] = [];
const byIdx = new Map<number, Conn>();
const deliveredBy = new Map<number, BitSet>();
const errors: Record<string, number> = {};
const totals: Totals = { sent: 0, acked: 0, errored: 0, pending: 0, deliveredUnique: 0, duplicates: 0, receipts: 0, closed: 0, opened: 0 };
let phase: PhaseState | null = null;
/** Buckets of the current phase, by second since its t0. */
let buckets = new Map<number, BucketAcc>();
let ackQueue: Conn[] = [];
let ackScheduled = false;
let body: Uint8Array = new Uint8Array(0);
const recovery: ReconnectStats = {
  dropped: [],
  reconnected: 0,
  down: [],
  firstDropAt: null,
  firstWelcomeAt: null,
  lastWelcomeAt: null,
  firstDeliverAt: null,
  firstAckAt: null,
  resent: 0,
  queued: 0,
  attempts: {},
  stale: 0,
};

function post(m: FromClient): void {
  process.send?.(m);
}

function countError(code: string, inWindow = false): void {
  errors[code] = (errors[code] ?? 0) + 1;
  if (phase) {
    const b = bucketAt(now());
    if (b) b.errors++;
    if (inWindow) phase.errors[code] = (phase.errors[code] ?? 0) + 1;
  }
}

function bucketAt(t: number): BucketAcc | null {
  if (!phase) return null;
  const sec = Math.floor((t - phase.msg.t0) / 1000);
  let b = buckets.get(sec);
  if (!b) {
    b = { sent: 0, acked: 0, delivered: 0, deliveredUnaffected: 0, errors: 0, hist: newHist() };
    buckets.set(sec, b);
  }
  return b;
}

function inWindow(sched: number): boolean {
  return phase !== null && sched >= phase.msg.measureFrom && sched < phase.msg.end;
}

// ------------------------------------------------------------------ connecting

class ConnectError extends Error {
  constructor(
    readonly code: string,
    readonly retryable: boolean,
  ) {
    super(code);
  }
}

function tokenFor(user: string, secret: string): Promise<string> {
  return mintToken(user, { secret });
}

function urlFor(c: ConnSpec, cfg: InitMsg): string {
  if (cfg.wire === 'relay') return `${cfg.url.replace(/\/$/, '')}/c/${c.idx}`;
  if (cfg.wire === 'echo') return `${cfg.url}${cfg.url.includes('?') ? '&' : '?'}room=${c.room}&id=${c.idx}`;
  return cfg.url;
}

async function connectOnce(c: Conn, cfg: InitMsg): Promise<void> {
  const headers: Record<string, string> = {};
  if (cfg.wire === 'iris') headers['authorization'] = `Bearer ${await tokenFor(c.spec.user, cfg.secret)}`;
  const opts: ConstructorParameters<typeof WebSocket>[2] = {
    headers,
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: cfg.connectTimeoutMs,
  };
  if (c.spec.localAddress !== null) opts.localAddress = c.spec.localAddress;
  const ws = new WebSocket(urlFor(c.spec, cfg), cfg.wire === 'iris' ? [SUBPROTOCOL] : [], opts);
  await new Promise<void>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => fail(new ConnectError('connect_timeout', true)), cfg.connectTimeoutMs);
    const fail = (e: ConnectError) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      ws.terminate();
      reject(e);
    };
    const ok = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ws.removeAllListeners();
      // Attached now, not after the promise settles: ws emits every frame of one TCP chunk synchronously, and
      // after a reconnect the backlog's first deliver often shares the chunk with the welcome.
      attach(c, ws);
      resolve();
    };
    ws.on('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      res.resume();
      fail(new ConnectError(`http_${status}`, status === 429 || status === 503));
    });
    ws.on('error', (e: NodeJS.ErrnoException) => fail(new ConnectError(`sock_${e.code ?? 'error'}`, true)));
    // 4000 = the server's hello timeout (it was too busy to answer in time): a real client reconnects.
    ws.on('close', (code: number) => fail(new ConnectError(`close_${code}_before_ready`, code === 4000 || code === 1001 || code === 1006)));
    ws.on('open', () => {
      // The cursor is what this connection has processed: 0 at first, and after a reconnect deliveries resume
      // after it (PROTOCOL.md section 8), so an entry seen before the drop is not sent again.
      if (cfg.wire === 'iris') ws.send(encodeBinary({ t: 'hello', device: 'bench', cursor: c.lastSeq }));
    });
    ws.on('message', (data: RawData) => {
      const buf = data as Buffer;
      if (cfg.wire === 'iris') {
        try {
          const f = decodeBinary(buf);
          if (f.t === 'welcome') ok();
          else if (f.t === 'error') fail(new ConnectError(`hello_${f.code}`, false));
        } catch {
          fail(new ConnectError('bad_frame_from_server', false));
        }
      } else if (buf.length === 1) ok();
    });
  });
}

function attach(c: Conn, ws: WebSocket): void {
  c.ws = ws;
  c.ready = true;
  c.closed = false;
  ws.on('message', (data: RawData) => onMessage(c, data as Buffer));
  ws.on('error', () => undefined);
  ws.on('close', (code: number) => {
    if (c.ws !== ws) return;
    c.ready = false;
    totals.closed++;
    if (closing) {
      c.closed = true;
      return;
    }
    countError(`close_${code}`);
    if (!init!.reconnect) {
      c.closed = true;
      return;
    }
    c.down = true;
    recovery.dropped.push(c.spec.idx);
    recovery.firstDropAt ??= now();
    void reconnect(c);
  });
}

/**
 * Kill mode: reopen a dropped connection until it gets a welcome or the run closes. Backoff 50, 100, then every
 * 200 ms: the time until the users are served again is what is measured, and the retry interval bounds its
 * resolution, so this retries more often than the server's `retry-after: 1` asks (a real client would wait
 * the second); a 503 from the supervisor costs little, and the attempts are counted.
 */
async function reconnect(c: Conn): Promise<void> {
  const cfg = init!;
  for (let attempt = 0; !closing; attempt++) {
    await sleep(Math.min(200, 50 * 2 ** attempt));
    if (closing) return;
    try {
      await connectOnce(c, cfg);
    } catch (e) {
      const code = e instanceof ConnectError ? e.code : String(e);
      recovery.attempts[code] = (recovery.attempts[code] ?? 0) + 1;
      continue;
    }
    const t = now();
    c.down = false;
    c.reconnected = true;
    c.sawDeliverSinceReconnect = false;
    c.sawAckSinceReconnect = false;
    recovery.reconnected++;
    recovery.firstWelcomeAt ??= t;
    recovery.lastWelcomeAt = t;
    // Every unacked send again, in order, with its client id and original body: one the server committed
    // before the drop is answered from its dedup window and stored once; one it never committed is stored now.
    for (const [seq, sched] of [...c.pending].sort((a, b) => a[0] - b[0])) {
      writeSend(c, seq, sched);
      recovery.resent++;
    }
    return;
  }
}

async function openAll(cfg: InitMsg): Promise<void> {
  const started = now();
  const connectErrors: Record<string, number> = {};
  /** Every failed attempt, including the ones a retry fixed. */
  const attempts: Record<string, number> = {};
  let ok = 0;
  let failed = 0;
  let next = 0;
  const runner = async () => {
    while (next < conns.length) {
      const c = conns[next++]!;
      let last = 'unknown';
      for (let attempt = 0; attempt < 6; attempt++) {
        try {
          await connectOnce(c, cfg);
          ok++;
          totals.opened++;
          last = '';
          break;
        } catch (e) {
          last = e instanceof ConnectError ? e.code : String(e);
          attempts[last] = (attempts[last] ?? 0) + 1;
          if (!(e instanceof ConnectError) || !e.retryable) break;
          await sleep(100 * 2 ** attempt);
        }
      }
      if (last !== '') {
        failed++;
        c.closed = true;
        connectErrors[last] = (connectErrors[last] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.connectConcurrency, conns.length) }, runner));
  for (const [k, v] of Object.entries(connectErrors)) errors[`connect_${k}`] = v;
  for (const [k, v] of Object.entries(attempts)) errors[`connect_attempt_${k}`] = v;
  const dead = conns.filter((c) => !c.ready).map((c) => c.spec.idx);
  post({ t: 'opened', proc: cfg.proc, ok, failed, errors: connectErrors, retried: attempts, ms: Math.round(now() - started), dead });
}

// ------------------------------------------------------------------ receiving

/** Kill mode: connections whose user the killed worker owns. */
let affected: ReadonlySet<number> = new Set();

function onBody(b: Uint8Array, off: number, t: number, rx: number): void {
  if (b.length < off + BODY_HEADER) {
    countError('short_body');
    return;
  }
  const sender = readU32(b, off);
  const seq = readU32(b, off + 4);
  const sched = readF64(b, off + 8);
  let set = deliveredBy.get(sender);
  if (!set) {
    set = new BitSet();
    deliveredBy.set(sender, set);
  }
  if (!set.add(seq)) {
    totals.duplicates++;
    return;
  }
  totals.deliveredUnique++;
  const bucket = bucketAt(t);
  if (bucket) {
    bucket.delivered++;
    if (!affected.has(sender) && !affected.has(rx)) bucket.deliveredUnaffected++;
    recordUs(bucket.hist, t - sched);
  }
  if (phase) {
    if (inWindow(sched)) {
      phase.delivered++;
      recordUs(phase.deliverHist, t - sched);
    }
    if (t >= phase.msg.measureFrom && t < phase.msg.end) phase.deliveredInWindow++;
  }
}

function onMessage(c: Conn, buf: Buffer): void {
  const t = now();
  if (init!.wire !== 'iris') {
    onBody(buf, 4, t, c.spec.idx);
    return;
  }
  let f;
  try {
    f = decodeBinary(buf);
  } catch {
    countError('bad_frame_from_server');
    return;
  }
  switch (f.t) {
    case 'send_ack': {
      const seq = parseInt(f.id, 36);
      const sched = c.pending.get(seq);
      if (sched === undefined) return;
      c.pending.delete(seq);
      totals.pending--;
      c.acked!.add(seq);
      totals.acked++;
      if (c.reconnected && !c.sawAckSinceReconnect) {
        c.sawAckSinceReconnect = true;
        recovery.firstAckAt ??= t;
      }
      const b = bucketAt(t);
      if (b) b.acked++;
      if (phase && inWindow(sched)) {
        phase.acked++;
        recordUs(phase.ackHist, t - sched);
      }
      return;
    }
    case 'receipts':
      // Receipt states (PROTOCOL.md 9.6): one per conversation and acknowledgement batch, not acked.
      totals.receipts += f.items.length;
      break;
    case 'deliver': {
      if (c.reconnected && !c.sawDeliverSinceReconnect) {
        c.sawDeliverSinceReconnect = true;
        recovery.firstDeliverAt ??= t;
      }
      for (const e of f.entries) {
        // Exactly once to the app (PROTOCOL.md section 8): an entry at or below the cursor was processed
        // already. Counted, because a server that sends one is worth knowing about.
        if (e.seq <= c.lastSeq) {
          recovery.stale++;
          countError('stale_entry');
          continue;
        }
        if (e.kind === 'message') onBody(e.body, 0, t, c.spec.idx);
        else totals.receipts++;
        c.lastSeq = e.seq;
      }
      if (!c.ackDue) {
        c.ackDue = true;
        ackQueue.push(c);
        if (!ackScheduled) {
          ackScheduled = true;
          setImmediate(flushAcks);
        }
      }
      return;
    }
    case 'error': {
      let win = false;
      if (f.ref !== undefined) {
        const seq = parseInt(f.ref, 36);
        const sched = c.pending.get(seq);
        if (sched !== undefined) {
          c.pending.delete(seq);
          totals.pending--;
          c.errored++;
          totals.errored++;
          win = inWindow(sched);
          if (phase && win) phase.errored++;
        }
      }
      countError(f.code, win);
      return;
    }
    default:
      return;
  }
}

/** Cumulative deliver_ack, once per connection per event-loop turn, as a real client batches them. */
function flushAcks(): void {
  ackScheduled = false;
  const q = ackQueue;
  ackQueue = [];
  for (const c of q) {
    c.ackDue = false;
    if (c.ws && c.ready) c.ws.send(encodeBinary({ t: 'deliver_ack', seq: c.lastSeq }));
  }
}

// ------------------------------------------------------------------ sending

/** One Iris send frame; the client id is the per-connection seq, so a resend is recognised by the server. */
function writeSend(c: Conn, seq: number, sched: number): void {
  writeHeader(body, 0, c.spec.idx, seq, sched);
  c.ws!.send(encodeBinary({ t: 'send', id: seq.toString(36), to: c.spec.toUser, body }));
}

function sendOne(c: Conn, sched: number, t: number, ph: PhaseState): void {
  const ws = c.ws!;
  const seq = c.seq++;
  const cfg = init!;
  if (cfg.wire === 'iris') {
    // While down (kill mode) the send waits in the outbox (`pending`) and goes out after the welcome.
    if (c.down) recovery.queued++;
    else writeSend(c, seq, sched);
    c.pending.set(seq, sched);
    totals.pending++;
  } else {
    const frame = Buffer.allocUnsafe(4 + cfg.bodyBytes);
    frame.set(body, 4);
    frame.writeUInt32LE(c.spec.to, 0);
    writeHeader(frame, 4, c.spec.idx, seq, sched);
    ws.send(frame);
  }
  totals.sent++;
  const b = bucketAt(t);
  if (b) b.sent++;
  if (sched >= ph.msg.measureFrom) {
    ph.sent++;
    recordUs(ph.lagHist, t - sched);
  }
}

function sendDue(): void {
  const ph = phase;
  if (!ph || ph.sendingDone) return;
  const t = now();
  const { t0, end, maxInflight } = ph.msg;
  const until = Math.min(t, end);
  const S = ph.senders.length;
  while (S > 0) {
    const sched = t0 + ph.next * ph.interval;
    if (sched > until || sched >= end) break;
    const c = ph.senders[ph.next % S]!;
    ph.next++;
    if (!c.down && (!c.ready || c.closed || !c.ws)) {
      countError('send_on_closed', inWindow(sched));
      continue;
    }
    sendOne(c, sched, t, ph);
    if (totals.pending > maxInflight) {
      ph.overloaded = true;
      countError('generator_inflight_cap', true);
      ph.sendingDone = true;
      return;
    }
  }
  if (t >= end || S === 0) {
    ph.sendingDone = true;
    return;
  }
  setTimeout(sendDue, 1);
}

function startPhase(m: PhaseMsg): void {
  // A sender whose recipient never connected would fill an offline inbox: those messages are not deliverable
  // within the run, so the pair sits out (its connect failure is already reported).
  const senders = conns.filter((c) => c.spec.to >= 0 && c.ready && byIdx.get(c.spec.to)?.ready !== false);
  const interval = m.rate > 0 ? 1000 / m.rate : Infinity;
  // Messages j with t0 + j*interval in [measureFrom, end).
  const first = Math.ceil((m.measureFrom - m.t0) / interval);
  const last = Math.ceil((m.end - m.t0) / interval);
  phase = {
    msg: m,
    senders,
    next: 0,
    interval,
    sendingDone: false,
    overloaded: false,
    scheduledInWindow: m.rate > 0 && senders.length > 0 ? Math.max(0, last - first) : 0,
    sent: 0,
    acked: 0,
    delivered: 0,
    errored: 0,
    deliveredInWindow: 0,
    ackHist: newHist(),
    deliverHist: newHist(),
    lagHist: newHist(),
    errors: {},
  };
  buckets = new Map();
  affected = new Set(m.affected);
  const wait = Math.max(0, m.t0 - now());
  setTimeout(sendDue, wait);
  if (m.killAt !== null) {
    setTimeout(() => post({ t: 'snapshot', proc: init!.proc, at: now(), account: account() }), Math.max(0, m.killAt - now()));
  }
}

// ------------------------------------------------------------------ reporting

function flushBuckets(all: boolean): Bucket[] {
  if (!phase) return [];
  const cur = Math.floor((now() - phase.msg.t0) / 1000);
  const out: Bucket[] = [];
  for (const [sec, b] of buckets) {
    if (!all && sec >= cur) continue;
    out.push({ sec, sent: b.sent, acked: b.acked, delivered: b.delivered, deliveredUnaffected: b.deliveredUnaffected, errors: b.errors, deliverHist: encodeHist(b.hist) });
    buckets.delete(sec);
  }
  return out;
}

function tick(): void {
  if (!init) return;
  post({ t: 'tick', proc: init.proc, phase: phase?.msg.phase ?? -1, buckets: flushBuckets(false), totals: { ...totals }, errors: { ...errors } });
}

function collect(n: number): void {
  const ph = phase;
  if (!ph || ph.msg.phase !== n) return;
  ph.sendingDone = true;
  post({ t: 'tick', proc: init!.proc, phase: n, buckets: flushBuckets(true), totals: { ...totals }, errors: { ...errors } });
  const result: PhaseResult = {
    phase: n,
    scheduled: ph.scheduledInWindow,
    sent: ph.sent,
    acked: init!.wire === 'iris' ? ph.acked : ph.sent,
    delivered: ph.delivered,
    errored: ph.errored,
    deliveredInWindow: ph.deliveredInWindow,
    ackHist: encodeHist(ph.ackHist),
    deliverHist: encodeHist(ph.deliverHist),
    lagHist: encodeHist(ph.lagHist),
    errors: ph.errors,
    overloaded: ph.overloaded,
  };
  phase = null;
  post({ t: 'phase_result', proc: init!.proc, result });
}

function account(): AccountMsg {
  const iris = init!.wire === 'iris';
  return {
    senders: conns
      .filter((c) => c.spec.to >= 0)
      .map((c) => ({ idx: c.spec.idx, sent: c.seq, acked: iris ? c.acked!.compact() : null, errored: c.errored, pending: c.pending.size })),
    delivered: [...deliveredBy].map(([sender, bits]) => ({ sender, bits: bits.compact() })),
    duplicates: totals.duplicates,
    receipts: totals.receipts,
    recovery: { ...recovery, attempts: { ...recovery.attempts }, dropped: [...recovery.dropped], down: conns.filter((c) => c.down).map((c) => c.spec.idx) },
  };
}

let closing = false;

async function closeAll(): Promise<void> {
  closing = true;
  phase = null;
  for (const c of conns) if (c.ws && !c.closed) c.ws.close(1000, 'bench done');
  const deadline = now() + 3000;
  while (conns.some((c) => c.ws && !c.closed && c.ws.readyState !== WebSocket.CLOSED) && now() < deadline) await sleep(20);
  for (const c of conns) if (c.ws && c.ws.readyState !== WebSocket.CLOSED) c.ws.terminate();
}

// ------------------------------------------------------------------ main

process.on('message', (m: ToClient) => {
  switch (m.t) {
    case 'init': {
      init = m;
      body = new Uint8Array(Math.max(BODY_HEADER, m.bodyBytes));
      for (let i = BODY_HEADER; i < body.length; i++) body[i] = 97 + (i % 26);
      for (const spec of m.conns) {
        const c: Conn = {
          spec,
          ws: null,
          ready: false,
          closed: false,
          seq: 0,
          pending: new Map(),
          acked: spec.to >= 0 && m.wire === 'iris' ? new BitSet() : null,
          errored: 0,
          lastSeq: 0,
          ackDue: false,
          down: false,
          reconnected: false,
          sawDeliverSinceReconnect: false,
          sawAckSinceReconnect: false,
        };
        conns.push(c);
        byIdx.set(spec.idx, c);
      }
      setInterval(tick, 1000).unref();
      openAll(m).catch((e: unknown) => post({ t: 'fatal', proc: m.proc, message: String(e) }));
      return;
    }
    case 'phase':
      startPhase(m);
      return;
    case 'stop_sending':
      if (phase) phase.sendingDone = true;
      return;
    case 'collect':
      collect(m.phase);
      return;
    case 'account':
      post({ t: 'account', proc: init!.proc, account: account() });
      return;
    case 'close':
      void closeAll().then(() => process.exit(0));
      return;
  }
});

process.on('disconnect', () => process.exit(0));
