/**
 * Key bundle fetch latency on-prem under message load (issue 11: target p99 <= 50 ms).
 *
 *   npm run build && sh scripts/node.sh --import tsx scripts/bench/keys.ts [--workers 2] [--pairs 200] [--rate 500]
 *        [--owners 500] [--fetchers 100] [--fetch-rate 100] [--cpu-fetch-rate 1000] [--warmup 5] [--duration 20]
 *        [--json out.json]
 *
 * Starts the built on-prem server (scripts/bench/servers.ts, the bench flags), then:
 *   1. --owners users each upload a bundle (identity, signed prekey, a 1569-byte last-resort key and 100 one-time
 *      prekeys of Signal's sizes) from one device;
 *   2. --pairs sender/receiver pairs start a steady open-loop message load of --rate msg/s (100-byte bodies, every
 *      delivery acked), timed against a schedule so a slow server cannot slow the load down;
 *   3. phase "messages": --duration s of the message load alone (server CPU baseline);
 *   4. phase "messages + fetches": --duration s more with --fetch-rate keys_fetch/s added, open loop, from --fetchers
 *      requesting users (round robin, each well under its IRIS_KEYS_FETCH_PER_SEC bucket) for owners picked at
 *      random, so fetches spread over every owner's shard and both workers (and cross the link between them).
 *   5. phase "fetches only": --duration s of --cpu-fetch-rate fetches/s and no messages, for server CPU per fetch
 *      (at 100 fetches/s the difference between phases 3 and 4 is within the noise of the message load). The
 *      server runs with IRIS_KEYS_FETCH_PER_SEC raised so that this rate fits the requesters' buckets.
 * Fetch latency is keys_fetch written -> keys_bundle read at the client (hdr histogram, microseconds), every
 * bundle is checked to carry a one-time prekey never seen before (the bench fails otherwise), and server CPU per
 * fetch is CPU of phase 5 / fetches of phase 5, from /proc of the server's processes (an idle server uses ~0). The
 * clients run in this one process, on the same machine: their CPU competes with the server's. Bounded: the run
 * is warm-up + 3 x duration plus set-up (about 100 s with the defaults), and stops the server whatever happens.
 */
import { writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { decodeFrame, encodeBinary, type ClientFrame, type ServerFrame } from '../../protocol/index.js';
import { mintToken } from '../token.js';
import { newHist, recordUs } from './common.js';
import { cpuSeconds, startOnprem } from './servers.js';

const { values: opt } = parseArgs({
  options: {
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: '200' },
    rate: { type: 'string', default: '500' },
    owners: { type: 'string', default: '500' },
    fetchers: { type: 'string', default: '100' },
    'fetch-rate': { type: 'string', default: '100' },
    'cpu-fetch-rate': { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '5' },
    duration: { type: 'string', default: '20' },
    json: { type: 'string' },
  },
});
const N = (k: keyof typeof opt): number => Number(opt[k]);
const SECRET = 'bench-keys-secret';
const RUN = Date.now().toString(36);
const rand = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One bare connection speaking binary frames; `on` sees every server frame. */
class Peer {
  private ws!: WebSocket;
  on: (f: ServerFrame) => void = () => {};
  constructor(readonly user: string) {}

  async open(url: string): Promise<void> {
    const token = await mintToken(this.user, { secret: SECRET });
    this.ws = new WebSocket(url, ['iris.v1', `bearer.${token}`]);
    this.ws.binaryType = 'nodebuffer';
    const welcomed = new Promise<void>((resolve, reject) => {
      this.ws.on('message', (d: Buffer) => {
        const f = decodeFrame(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)) as ServerFrame;
        if (f.t === 'welcome') resolve();
        else if (f.t === 'deliver') this.write({ t: 'deliver_ack', seq: f.entries[f.entries.length - 1]!.seq });
        this.on(f);
      });
      this.ws.on('error', reject);
      this.ws.on('close', () => reject(new Error(`${this.user}: closed`)));
    });
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    this.write({ t: 'hello', device: 'd1', cursor: 0 });
    await welcomed;
  }

  write(f: ClientFrame): void {
    this.ws.send(encodeBinary(f));
  }

  close(): void {
    this.ws.close();
  }
}

async function inBatches<T>(items: T[], size: number, fn: (x: T) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += size) await Promise.all(items.slice(i, i + size).map(fn));
}

async function main(): Promise<void> {
  const server = await startOnprem({ profileDir: null, port: 0, workers: N('workers'), dataDir: mkdtempSync(join(tmpdir(), 'iris-bench-keys-')), keepData: false, secret: SECRET, args: ['--keys-fetch-per-sec', '100'] });
  const pids = [server.pid, ...(server.workerPids ?? [])].filter((p): p is number => typeof p === 'number');
  const peers: Peer[] = [];
  try {
    // 1. Owners publish their bundles.
    const owners = Array.from({ length: N('owners') }, (_, i) => `own-${RUN}-${i}`);
    await inBatches(owners, 50, async (u) => {
      const p = new Peer(u);
      await p.open(server.url);
      const done = new Promise<void>((resolve, reject) => {
        p.on = (f) => (f.t === 'keys_state' ? resolve() : f.t === 'error' ? reject(new Error(`${u}: ${f.code} ${f.message}`)) : undefined);
      });
      p.write({ t: 'keys_upload', ref: 'u', identity: rand(33), signed: { id: 1, key: rand(33), sig: rand(64), ts: Date.now() }, lastResort: { id: 1, key: rand(1569), sig: rand(64) }, prekeys: Array.from({ length: 100 }, (_, i) => ({ id: i + 1, key: rand(33) })) });
      await done;
      p.close();
    });
    // 2. The message load.
    const senders: Peer[] = [];
    let acked = 0;
    /** send -> send_ack of the message load during phase 4: the control. A tail seen here too is the machine's. */
    const ackHist = newHist();
    const msgAt = new Map<string, number>();
    let recordAcks = false;
    await inBatches(Array.from({ length: N('pairs') }, (_, i) => i), 50, async (i) => {
      const s = new Peer(`snd-${RUN}-${i}`);
      const r = new Peer(`rcv-${RUN}-${i}`);
      await Promise.all([s.open(server.url), r.open(server.url)]);
      s.on = (f) => {
        if (f.t !== 'send_ack') return;
        acked++;
        const t0 = msgAt.get(f.id);
        if (t0 === undefined) return;
        msgAt.delete(f.id);
        if (recordAcks) recordUs(ackHist, performance.now() - t0);
      };
      senders.push(s);
      peers.push(s, r);
    });
    const fetchers: Peer[] = [];
    const hist = newHist();
    const seen = new Set<string>();
    const sentAt = new Map<string, number>();
    let fetchErrors = 0;
    let noPrekey = 0;
    await inBatches(Array.from({ length: N('fetchers') }, (_, i) => i), 50, async (i) => {
      const p = new Peer(`fet-${RUN}-${i}`);
      await p.open(server.url);
      p.on = (f) => {
        if (f.t === 'error' && f.ref !== undefined && sentAt.delete(f.ref)) fetchErrors++;
        if (f.t !== 'keys_bundle') return;
        const t0 = sentAt.get(f.ref);
        if (t0 === undefined) return;
        sentAt.delete(f.ref);
        recordUs(current, performance.now() - t0);
        const k = f.devices[0]?.prekey;
        if (!k) return void noPrekey++;
        const key = `${f.user}/${k.id}`;
        if (seen.has(key)) throw new Error(`prekey ${key} handed out twice`);
        seen.add(key);
      };
      fetchers.push(p);
      peers.push(p);
    });
    const body = new Uint8Array(100).fill(0x61);
    let msgSeq = 0;
    let fetchSeq = 0;
    let fetching = false;
    let messages = true;
    /** Phase 5's latencies (fetches only), apart from those under message load. */
    let current = hist;
    const stress = newHist();
    const start = performance.now();
    const msgInterval = 1000 / N('rate');
    let fetchInterval = 1000 / N('fetch-rate');
    let msgDue = start;
    let fetchDue = start;
    // Open loop: each tick writes whatever the schedule says is due, however late the tick is.
    const tick = setInterval(() => {
      const now = performance.now();
      if (!messages) msgDue = now;
      while (messages && msgDue <= now) {
        const s = senders[msgSeq % senders.length]!;
        const id = `m${msgSeq++}`;
        msgAt.set(id, performance.now());
        s.write({ t: 'send', id, to: s.user.replace('snd-', 'rcv-'), body });
        msgDue += msgInterval;
      }
      if (!fetching) fetchDue = now;
      while (fetching && fetchDue <= now) {
        const ref = `k${fetchSeq++}`;
        sentAt.set(ref, performance.now());
        fetchers[fetchSeq % fetchers.length]!.write({ t: 'keys_fetch', ref, user: owners[Math.floor(Math.random() * owners.length)]! });
        fetchDue += fetchInterval;
      }
    }, 5);
    const D = N('duration') * 1000;
    await sleep(N('warmup') * 1000);
    const cpu0 = cpuSeconds(pids);
    const acked0 = acked;
    await sleep(D);
    const cpu1 = cpuSeconds(pids);
    const acked1 = acked;
    fetching = true;
    recordAcks = true;
    await sleep(D);
    recordAcks = false;
    const cpu2 = cpuSeconds(pids);
    const acked2 = acked;
    messages = false;
    current = stress;
    fetchInterval = 1000 / N('cpu-fetch-rate');
    await sleep(1000); // the message load's tail
    const cpu3 = cpuSeconds(pids);
    const stress0 = stress.totalCount;
    await sleep(D);
    const cpu4 = cpuSeconds(pids);
    const stressFetched = stress.totalCount - stress0;
    clearInterval(tick);
    await sleep(1000);
    const q = (p: number): number => Math.round(hist.getValueAtPercentile(p) / 10) / 100;
    const qa = (p: number): number => Math.round(ackHist.getValueAtPercentile(p) / 10) / 100;
    const qs = (p: number): number => Math.round(stress.getValueAtPercentile(p) / 10) / 100;
    const result = {
      workers: N('workers'),
      offeredMsgPerSec: N('rate'),
      ackedMsgPerSec: { messagesOnly: Math.round((acked1 - acked0) / (D / 1000)), withFetches: Math.round((acked2 - acked1) / (D / 1000)) },
      sendAckLatencyMs: { p50: qa(50), p99: qa(99), p999: qa(99.9) },
      fetchRate: N('fetch-rate'),
      /** Fetches answered under message load (phase 4 and its tail). */
      fetches: hist.totalCount,
      fetchLatencyMs: { p50: q(50), p99: q(99), p999: q(99.9), max: Math.round(hist.maxValue / 10) / 100 },
      uniquePrekeys: seen.size,
      bundlesWithoutPrekey: noPrekey,
      fetchErrors,
      unanswered: sentAt.size,
      serverCpuCores: { messagesOnly: +((cpu1 - cpu0) / (D / 1000)).toFixed(2), withFetches: +((cpu2 - cpu1) / (D / 1000)).toFixed(2), fetchesOnly: +((cpu4 - cpu3) / (D / 1000)).toFixed(2) },
      fetchesOnly: { offeredPerSec: N('cpu-fetch-rate'), answeredPerSec: Math.round(stressFetched / (D / 1000)), latencyMs: { p50: qs(50), p99: qs(99), p999: qs(99.9) } },
      serverCpuMsPerFetch: stressFetched > 0 ? +(((cpu4 - cpu3) * 1000) / stressFetched).toFixed(3) : null,
      elapsedS: Math.round((performance.now() - start) / 1000),
    };
    console.log(JSON.stringify(result, null, 2));
    if (opt.json) writeFileSync(opt.json, JSON.stringify(result, null, 2) + '\n');
  } finally {
    for (const p of peers) p.close();
    await server.stop();
  }
}

await main();
