/**
 * Noisy neighbour on the Cloudflare profile: how much does one user's burst delay other users' acks?
 *
 *   npm run bench:burst                      # starts wrangler dev (bench config) on a free port, ~1 min
 *   npm run bench:burst -- --url ws://127.0.0.1:8787 --secret S   # against a server you run
 *   npm run bench:burst -- --seconds 5 --json out.json
 *
 * One victim (its own user and shard, never touched by the flooder) sends a message every --victim-ms to a
 * second user and records send -> send_ack latency. Scenarios, each --seconds long, one after the other:
 *
 *   idle          no flood: the victim's baseline
 *   iris-frames   a flooder sends binary `ping` frames to ITS Iris shard as fast as it answers them
 *                 (at most --window unanswered), the "frame flood"
 *   echo-frames   the same flood against the bare echo Durable Object (scripts/bench/cf-bench.ts): no Iris
 *                 code, no storage — what workerd itself costs the victim under that flood
 *   iris-sends    the flooder sends --burst-rate messages/s (open loop) through Iris to a sink user
 *   echo-sends    the same rate of same-size messages through the echo object
 *
 * The flooder runs in a child process so its loop does not distort the victim's clock. Everything is
 * bounded: the run ends after 5 x --seconds plus start-up, whatever the server does.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { decodeFrame, encodeBinary, type ServerFrame } from '../../protocol/index.js';
import { mintToken } from '../token.js';
import { ROOT, freePort, startWrangler, type Server } from './servers.js';

interface Options {
  url: string | null;
  secret: string;
  seconds: number;
  victimMs: number;
  burstRate: number;
  window: number;
  json: string | null;
  role: 'main' | 'flood';
  mode: string;
  /** Which scenarios to run; the echo ones need the bench config's EchoShard (not there with --url). */
  scenarios: string[];
}

const SCENARIOS = ['idle', 'iris-frames', 'echo-frames', 'iris-sends', 'echo-sends'];

const BODY = new Uint8Array(64).fill(0x61);

function parse(argv: string[]): Options {
  const o: Options = { url: null, secret: 'bench-burst-secret', seconds: 10, victimMs: 20, burstRate: 5000, window: 1000, json: null, role: 'main', mode: '', scenarios: SCENARIOS };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === '--url') o.url = v().replace(/\/v1\/connect$/, '');
    else if (a === '--secret') o.secret = v();
    else if (a === '--seconds') o.seconds = Number(v());
    else if (a === '--victim-ms') o.victimMs = Number(v());
    else if (a === '--burst-rate') o.burstRate = Number(v());
    else if (a === '--window') o.window = Number(v());
    else if (a === '--json') o.json = v();
    else if (a === '--role') o.role = v() as Options['role'];
    else if (a === '--mode') o.mode = v();
    else if (a === '--scenarios') o.scenarios = v().split(',');
    else if (a === '--help') {
      console.log('options: --url ws://host:port  --secret S  --seconds 10  --victim-ms 20  --burst-rate 5000  --window 1000  --json FILE  --scenarios ' + SCENARIOS.join(','));
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (!(o.seconds > 0 && o.seconds <= 120)) throw new Error('--seconds must be in (0, 120]');
  for (const sc of o.scenarios) if (!SCENARIOS.includes(sc)) throw new Error(`unknown scenario ${sc} (${SCENARIOS.join(', ')})`);
  return o;
}

function open(url: string, protocols: string[]): Promise<WebSocket> {
  return new Promise((res, rej) => {
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false });
    ws.binaryType = 'arraybuffer';
    const t = setTimeout(() => rej(new Error(`no open: ${url}`)), 15_000);
    ws.once('open', () => {
      clearTimeout(t);
      res(ws);
    });
    ws.once('error', (e) => {
      clearTimeout(t);
      rej(e);
    });
  });
}

async function irisSocket(base: string, user: string, secret: string): Promise<WebSocket> {
  const ws = await open(`${base}/v1/connect`, ['iris.v1', `bearer.${await mintToken(user, { secret, ttl: '1h' })}`]);
  ws.send(encodeBinary({ t: 'hello', device: 'bench', cursor: 0 }));
  await new Promise<void>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no welcome for ${user}`)), 15_000);
    const on = (d: ArrayBuffer) => {
      if ((decodeFrame(d) as ServerFrame).t === 'welcome') {
        clearTimeout(t);
        ws.off('message', on);
        res();
      }
    };
    ws.on('message', on);
  });
  return ws;
}

function echoFrame(payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(4 + payload.length);
  new DataView(b.buffer).setUint32(0, 1, true); // dest 1 = this socket (id=1): a plain echo
  b.set(payload, 4);
  return b;
}

// ------------------------------------------------------------------ flooder (child process)

/** Floods until stdin closes or the time is up; prints {sent, answered} as JSON on exit. */
async function flood(o: Options): Promise<void> {
  const base = o.url!;
  const run = process.pid;
  let ws: WebSocket;
  let frame: () => Uint8Array;
  const iris = o.mode.startsWith('iris');
  let sink: WebSocket | null = null;
  if (iris) {
    ws = await irisSocket(base, `flood-${run}`, o.secret);
    if (o.mode === 'iris-sends') {
      // The recipient is online and acks, as in a real burst between two users: its inbox never fills.
      const sk = await irisSocket(base, `sink-${run}`, o.secret);
      sk.on('message', (d: ArrayBuffer) => {
        const f = decodeFrame(d) as ServerFrame;
        if (f.t === 'deliver') sk.send(encodeBinary({ t: 'deliver_ack', seq: f.entries[f.entries.length - 1]!.seq }));
      });
      sink = sk;
    }
    let n = 0;
    frame = o.mode === 'iris-frames' ? () => encodeBinary({ t: 'ping' }) : () => encodeBinary({ t: 'send', id: `f${++n}`, to: `sink-${run}`, body: BODY });
  } else {
    // The object's READY byte can arrive in the same read as the 101: listen for it before the socket opens.
    const w = new WebSocket(`${base}/bench/echo?room=flood-${run}&id=1`, { perMessageDeflate: false });
    const ready = new Promise<void>((r) => w.once('message', () => r()));
    await Promise.race([ready, new Promise((_, j) => setTimeout(() => j(new Error('echo: no READY')), 15_000))]);
    ws = w;
    const f = o.mode === 'echo-frames' ? echoFrame(new Uint8Array([9])) : echoFrame(encodeBinary({ t: 'send', id: 'f0000001', to: `sink-${run}`, body: BODY }));
    frame = () => f;
  }
  let sent = 0;
  let answered = 0;
  // Iris: count the answers to the flood (pong, send_ack, error), not receipts or other traffic.
  if (iris) {
    ws.on('message', (d: ArrayBuffer) => {
      const t = (decodeFrame(d) as ServerFrame).t;
      if (t === 'pong' || t === 'send_ack' || t === 'error') answered++;
    });
  } else ws.on('message', () => answered++);
  process.stdout.write('ready\n');
  const end = Date.now() + o.seconds * 1000;
  const finish = () => {
    process.stdout.write(JSON.stringify({ sent, answered }) + '\n');
    ws.terminate();
    sink?.terminate();
    process.exit(0);
  };
  process.stdin.on('end', finish);
  // Bounded even if the parent dies without closing stdin.
  setTimeout(finish, (o.seconds * 4 + 30) * 1000).unref();
  process.stdin.resume();
  if (o.mode.endsWith('frames')) {
    // Closed loop: as fast as the server answers, at most `window` unanswered.
    const pump = () => {
      while (sent - answered < o.window && ws.bufferedAmount < 1 << 20) {
        ws.send(frame());
        sent++;
      }
      // Flood for --seconds, then only count late answers until the parent closes stdin.
      if (Date.now() < end) setImmediate(pump);
    };
    pump();
  } else {
    // Open loop at burstRate per second, in 10 ms ticks.
    const t0 = Date.now();
    const tick = setInterval(() => {
      const now = Date.now();
      const due = Math.floor(((now - t0) / 1000) * o.burstRate);
      while (sent < due) {
        ws.send(frame());
        sent++;
      }
      if (now >= end) clearInterval(tick);
    }, 10);
  }
}

// ------------------------------------------------------------------ victim and scenarios

interface Stats {
  samples: number;
  lost: number;
  p50: number;
  p99: number;
  max: number;
}

function stats(lat: number[], lost: number): Stats {
  const s = [...lat].sort((a, b) => a - b);
  const q = (p: number) => (s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.floor(p * s.length))]!);
  return { samples: s.length, lost, p50: q(0.5), p99: q(0.99), max: s.length ? s[s.length - 1]! : NaN };
}

/** The victim: one send every victimMs for `seconds`, send -> send_ack latency in ms. */
async function victim(ws: WebSocket, to: string, o: Options, tag: string): Promise<Stats> {
  const pending = new Map<string, number>();
  const lat: number[] = [];
  const on = (d: ArrayBuffer) => {
    const f = decodeFrame(d) as ServerFrame;
    if (f.t === 'send_ack' || (f.t === 'error' && f.ref !== undefined)) {
      const id = f.t === 'send_ack' ? f.id : f.ref!;
      const t = pending.get(id);
      if (t !== undefined) {
        lat.push(performance.now() - t);
        pending.delete(id);
      }
    }
    if (f.t === 'deliver') ws.send(encodeBinary({ t: 'deliver_ack', seq: f.entries[f.entries.length - 1]!.seq }));
  };
  ws.on('message', on);
  let n = 0;
  const end = Date.now() + o.seconds * 1000;
  await new Promise<void>((done) => {
    const tick = setInterval(() => {
      if (Date.now() >= end) {
        clearInterval(tick);
        done();
        return;
      }
      const id = `${tag}-${++n}`;
      pending.set(id, performance.now());
      ws.send(encodeBinary({ t: 'send', id, to, body: BODY }));
    }, o.victimMs);
  });
  // Late acks: wait up to max(15 s, 2 x seconds) more, then count the rest as lost (bounded).
  const grace = Date.now() + Math.max(15_000, 2 * o.seconds * 1000);
  while (pending.size > 0 && Date.now() < grace) await new Promise((r) => setTimeout(r, 50));
  ws.off('message', on);
  return stats(lat, pending.size);
}

function startFlooder(o: Options, mode: string): Promise<{ stop: () => Promise<{ sent: number; answered: number }> }> {
  const args = [join(ROOT, 'scripts/node.sh'), '--import', 'tsx', join(ROOT, 'scripts/bench/burst.ts'), '--role', 'flood', '--mode', mode,
    '--url', o.url!, '--secret', o.secret, '--seconds', String(o.seconds), '--window', String(o.window), '--burst-rate', String(o.burstRate)];
  const child = spawn('sh', args, { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  // Registered now: the flooder may end on its own (--seconds + 5) before stop() is called.
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`flooder ${mode} not ready`)), 60_000);
    const check = () => {
      if (out.includes('ready\n')) {
        clearTimeout(t);
        child.stdout.off('data', check);
        res({
          stop: async () => {
            child.stdin.end();
            await exited;
            const line = out.split('\n').find((l) => l.startsWith('{'));
            return line ? (JSON.parse(line) as { sent: number; answered: number }) : { sent: 0, answered: 0 };
          },
        });
      }
    };
    child.stdout.on('data', check);
    child.once('exit', (c) => rej(new Error(`flooder ${mode} exited (${c}) before ready`)));
  });
}

async function main(): Promise<void> {
  const o = parse(process.argv.slice(2));
  if (o.role === 'flood') return flood(o);
  let server: Server | null = null;
  if (o.url === null) {
    const port = await freePort();
    console.error(`starting wrangler dev (scripts/bench/wrangler.bench.toml) on 127.0.0.1:${port} ...`);
    server = await startWrangler(port, o.secret);
    o.url = `ws://127.0.0.1:${port}`;
  }
  const results: Record<string, Stats & { flood: { sent: number; answered: number; perSec: number } | null }> = {};
  try {
    const run = Date.now().toString(36);
    const ws = await irisSocket(o.url, `victim-${run}`, o.secret);
    const to = `victim-peer-${run}`;
    // Warm-up: both shards exist and the path is compiled before anything is measured.
    await victim(ws, to, { ...o, seconds: 1 }, 'warm');
    for (const mode of o.scenarios) {
      // A flood leaves a backlog in workerd after the flooder is gone: start each scenario once it drained
      // (one victim send acked within 50 ms), for at most 60 s.
      const settle = Date.now() + 60_000;
      while (Date.now() < settle && !((await victim(ws, to, { ...o, seconds: 0.2 }, `settle-${mode}`)).max < 50));
      const f = mode === 'idle' ? null : await startFlooder(o, mode);
      const s = await victim(ws, to, o, mode);
      const fr = f ? await f.stop() : null;
      results[mode] = { ...s, flood: fr ? { ...fr, perSec: Math.round(fr.answered / o.seconds) } : null };
      const fl = fr ? `flood ${fr.sent} sent, ${fr.answered} answered (${Math.round(fr.answered / o.seconds)}/s)` : 'no flood';
      console.error(`${mode.padEnd(12)} victim acks p50 ${s.p50.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms, max ${s.max.toFixed(1)} ms, ${s.samples} acks, ${s.lost} lost; ${fl}`);
    }
    ws.terminate();
  } finally {
    // wrangler dev rebuilds and restarts the Worker when a bundled file changes (here: any edit in the checkout
    // or in node_modules' packages), dropping every socket: such a run measures the restart, not the flood.
    const out = server?.output() ?? '';
    if (/Build failed|Reloading|Detected changes/i.test(out)) console.error('WARNING: wrangler dev rebuilt during the run; the numbers are not valid. Run again.');
    await server?.stop();
  }
  const machine = `${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown'}), Node ${process.versions.node}`;
  console.log(`\nmachine: ${machine}; --seconds ${o.seconds} --victim-ms ${o.victimMs} --burst-rate ${o.burstRate} --window ${o.window}\n`);
  console.log('| scenario | victim ack p50 (ms) | p99 (ms) | max (ms) | acks | lost | flooder answered/s |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const [k, r] of Object.entries(results)) {
    console.log(`| ${k} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.max.toFixed(1)} | ${r.samples} | ${r.lost} | ${r.flood ? r.flood.perSec : '—'} |`);
  }
  if (o.json) writeFileSync(o.json, JSON.stringify({ machine, options: o, results }, null, 2));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
