/**
 * Memory per idle connection: opens --conns authenticated, hello'd WebSockets (distinct users) to a one-worker
 * server and reports the worker's RSS growth per connection (from /proc), which sizes a box (docs/OPERATIONS.md).
 *
 *   sh scripts/node.sh --import tsx onprem/bench/conns.ts [--conns 5000]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { SUBPROTOCOL, decodeBinary, encodeBinary } from '../../protocol/index.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const { values } = parseArgs({ options: { conns: { type: 'string', default: '5000' }, port: { type: 'string', default: '18899' } } });
const N = Math.min(15_000, Number(values.conns));
const SECRET = 'conns-bench';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

const dataDir = mkdtempSync(join(tmpdir(), 'iris-conns-bench-'));
const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'onprem/main.ts'), '--port', values.port, '--data-dir', dataDir, '--workers', '1'], {
  cwd: ROOT,
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, IRIS_JWT_SECRET: SECRET, IRIS_CONNECT_RATE: '10000000', IRIS_LOG: 'error' },
});
let out = '';
child.stdout.on('data', (d: Buffer) => (out += d.toString()));
let worker = 0;
for (let i = 0; i < 600 && worker === 0; i++) {
  const m = /pids (\d+)/.exec(out);
  if (m) worker = Number(m[1]);
  await sleep(50);
}
const sockets: WebSocket[] = [];
try {
  if (worker === 0) throw new Error(`server did not start: ${out}`);
  const key = new TextEncoder().encode(SECRET);
  // Warm up (JIT, pools) with a few connections, then measure.
  const open = async (i: number) => {
    const token = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(`c${i}`).setExpirationTime('1h').sign(key);
    const ws = new WebSocket(`ws://127.0.0.1:${values.port}/v1/connect`, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    await new Promise<void>((res, rej) => {
      ws.once('open', () => ws.send(encodeBinary({ t: 'hello', device: 'd', cursor: 0 })));
      ws.on('message', (d: Buffer) => decodeBinary(new Uint8Array(d)).t === 'welcome' && res());
      ws.once('error', rej);
    });
    sockets.push(ws);
  };
  for (let i = 0; i < 200; i++) await open(i);
  await sleep(1000);
  const before = rssKiB(worker);
  const t0 = Date.now();
  for (let i = 200; i < N + 200; i += 50) await Promise.all(Array.from({ length: Math.min(50, N + 200 - i) }, (_, k) => open(i + k)));
  const secs = (Date.now() - t0) / 1000;
  await sleep(3000);
  const after = rssKiB(worker);
  console.log(`${N} idle connections (authenticated, hello'd, one mailbox each) in ${secs.toFixed(1)} s: worker RSS ${Math.round(before / 1024)} -> ${Math.round(after / 1024)} MiB = ${((after - before) / N).toFixed(1)} KiB per connection`);
} finally {
  for (const s of sockets) s.terminate();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
}
