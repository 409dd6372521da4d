/**
 * Where a cluster node's CPU goes (issue 13): self time of .cpuprofile files summed by LAYER (which file a
 * function lives in) and restricted to a time window, so that the idle cluster's cost (leases, heartbeats,
 * assignment ticks) and the loaded window can be told apart in profiles that also cover start-up and shutdown.
 *
 * Windows are in microseconds of the monotonic clock: V8 profiles stamp samples with it (startTime + the
 * running sum of timeDeltas) and so does process.hrtime in the bench script, so one process can cut the
 * profiles of others on the same machine.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/cluster-profile.ts DIR [--from US --to US]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isMain } from '../lib/main.js';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** Layers, first match wins; the patterns are matched against the function's file url. */
const LAYERS: [string, RegExp][] = [
  ['cluster/storage.ts (changeset capture, commit = append)', /\/cluster\/storage\./],
  ['cluster/log.ts (append, expectations, replay)', /\/cluster\/log\./],
  ['cluster/rpc.ts (calls between nodes)', /\/cluster\/rpc\./],
  ['cluster/lease.ts, membership, assign, node (idle duties)', /\/cluster\/(lease|membership|assign|node|retry|partition|snapshot)\./],
  ['onprem/cluster/ (relay, peers, host)', /\/onprem\/cluster\//],
  ['@nats-io/jetstream + kv (client)', /node_modules\/@nats-io\/(jetstream|kv)\//],
  ['@nats-io/nats-core + transport (client protocol, sockets)', /node_modules\/@nats-io\//],
  ['ws (WebSocket frames)', /node_modules\/ws\//],
  ['core/ (mailbox, the message path)', /\/core\//],
  ['protocol/ (codec)', /\/protocol\//],
  ['onprem/ storage, worker, server', /\/onprem\//],
  ['auth/ (tokens)', /\/auth\/|node_modules\/jose\//],
  ['node: internals (streams, net, timers)', /^node:|^internal\//],
];

/** One sample's bucket: the layer of its leaf frame; native leaves ((program), (garbage collector), sqlite calls with no url) are named as such. */
function layerOf(n: Node): string {
  const { url, functionName } = n.callFrame;
  if (url === '') return functionName === '(garbage collector)' || functionName === '(program)' || functionName === '(idle)' ? functionName : 'native (no url: sqlite, crypto, builtins)';
  for (const [name, re] of LAYERS) if (re.test(url)) return name;
  return 'other JS';
}

export interface LayerCut {
  /** CPU time in the window per layer, ms (idle excluded). */
  layers: Map<string, number>;
  /** Busy ms and window ms covered by the samples. */
  busyMs: number;
  windowMs: number;
}

/** Self time per layer of every sample whose timestamp lies in [fromUs, toUs). */
export function cutProfile(file: string, fromUs = -Infinity, toUs = Infinity): LayerCut {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const layerById = new Map<number, string>();
  const layers = new Map<string, number>();
  let busy = 0;
  let first = Infinity;
  let last = -Infinity;
  // A sample stands for the time until the next one.
  forEachSample(p, fromUs, toUs, (id, t, dt) => {
    first = Math.min(first, t);
    last = Math.max(last, t);
    let layer = layerById.get(id);
    if (layer === undefined) {
      layer = layerOf(byId.get(id)!);
      layerById.set(id, layer);
    }
    if (layer === '(idle)') return;
    busy += dt;
    layers.set(layer, (layers.get(layer) ?? 0) + dt / 1000);
  });
  return { layers, busyMs: busy / 1000, windowMs: last > first ? (last - first) / 1000 : 0 };
}

export function findProfiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findProfiles(p));
    else if (e.name.endsWith('.cpuprofile')) out.push(p);
  }
  return out.sort();
}

/** Sums the layers of every profile under dir in the window; returns markdown rows (layer, ms, share, per message). */
export function layerTable(dir: string, fromUs: number, toUs: number, messages: number): string[] {
  const total = new Map<string, number>();
  let busy = 0;
  for (const f of findProfiles(dir)) {
    const c = cutProfile(f, fromUs, toUs);
    busy += c.busyMs;
    for (const [k, v] of c.layers) total.set(k, (total.get(k) ?? 0) + v);
  }
  const secs = (toUs - fromUs) / 1e6;
  const rows = ['| layer (leaf frame\'s file) | CPU ms | share | cores | µs per message |', '|---|---|---|---|---|'];
  for (const [k, v] of [...total.entries()].sort((a, b) => b[1] - a[1])) {
    rows.push(`| ${k} | ${Math.round(v)} | ${((v / busy) * 100).toFixed(1)}% | ${(v / 1000 / secs).toFixed(3)} | ${messages > 0 ? Math.round((v * 1000) / messages) : '-'} |`);
  }
  rows.push(`| **all Iris processes** | ${Math.round(busy)} | 100% | ${(busy / 1000 / secs).toFixed(3)} | ${messages > 0 ? Math.round((busy * 1000) / messages) : '-'} |`);
  return rows;
}

/**
 * Activities: each sample goes to the first rule matched walking its stack from the leaf towards the root, so
 * a socket write lands with whoever wrote (the NATS client, ws, the relay's pipe), a SQLite call with its caller.
 */
const ACTIVITIES: [string, (f: Node['callFrame']) => boolean][] = [
  ['NATS request bookkeeping: Error objects built per request (stacks)', (f) => /^(RequestError|TimeoutError)$/.test(f.functionName) && f.url.includes('@nats-io')],
  ['changeset capture: session.changeset(), new session per group (cluster/storage.ts ship)', (f) => f.functionName === 'ship' && /cluster\/storage/.test(f.url)],
  ['NATS client: protocol, JetStream publish/ack, its socket writes', (f) => f.url.includes('@nats-io')],
  ['client sockets: WebSocket frames (ws) and their corked writes (onprem/conn.ts)', (f) => f.url.includes('node_modules/ws/') || /\/onprem\/conn\./.test(f.url)],
  ['calls between nodes: rpc, peers, relay setup (cluster/rpc.ts, onprem/cluster)', (f) => /\/cluster\/rpc\.|\/onprem\/cluster\/|\/onprem\/group-link\./.test(f.url)],
  ['lease, membership, assignment (idle duties)', (f) => /\/cluster\/(lease|membership|assign|node)\./.test(f.url)],
  ['core message path: its SQL statements and logic (core/)', (f) => /\/core\//.test(f.url)],
  // run/all/prepared are the statements the core issues: they go on up to the core frame that called them.
  ['SQLite COMMIT and group commit of the local view (onprem/storage.ts)', (f) => /\/onprem\/storage\./.test(f.url) && !/^(run|all|prepared)$/.test(f.functionName)],
  ['rest of the on-prem server (listener, worker, pipe port; onprem/)', (f) => /\/onprem\//.test(f.url)],
  ['protocol codec', (f) => /\/protocol\//.test(f.url)],
];

/** Self time per activity in the window, over every profile under dir (idle excluded); stacks with no JS frame that wrote to a socket are the relay's pipe. */
export function activityTable(dir: string, fromUs: number, toUs: number, messages: number): string[] {
  const total = new Map<string, number>();
  let busy = 0;
  for (const file of findProfiles(dir)) {
    const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const memo = new Map<number, string>();
    const classify = (leaf: number): string => {
      const hit = memo.get(leaf);
      if (hit !== undefined) return hit;
      let out = '';
      let pipe = false;
      for (let id: number | undefined = leaf; id !== undefined && out === ''; id = parent.get(id)) {
        const f = byId.get(id)!.callFrame;
        if (f.functionName === 'ondata' && f.url.includes('streams/readable')) pipe = true;
        for (const [name, test] of ACTIVITIES) if (out === '' && test(f)) out = name;
      }
      const lf = byId.get(leaf)!.callFrame.functionName;
      if (out === '') out = pipe ? 'relay: socket piped to the owner node (stream pipe, socket writes)' : lf.startsWith('(') ? lf : 'other (node internals, timers, microtasks)';
      memo.set(leaf, out);
      return out;
    };
    forEachSample(p, fromUs, toUs, (id, _t, dtUs) => {
      const k = classify(id);
      if (k === '(idle)') return;
      const dt = dtUs / 1000;
      busy += dt;
      total.set(k, (total.get(k) ?? 0) + dt);
    });
  }
  const rows = ['| activity (first match from the leaf up) | sampled ms | share |', '|---|---|---|'];
  for (const [k, v] of [...total.entries()].sort((a, b) => b[1] - a[1])) rows.push(`| ${k} | ${Math.round(v)} | ${((v / busy) * 100).toFixed(1)}% |`);
  rows.push(`| **all Iris processes** | ${Math.round(busy)} | 100% (${messages > 0 ? `${Math.round((busy * 1000) / messages)} µs sampled per message` : 'idle'}) |`);
  return rows;
}

/**
 * Calls fn for every sample of `p` taken in [fromUs, toUs) (V8 stamps them with process.hrtime's clock), with its
 * node id, its time and how long it stands for (µs until the next sample).
 */
function forEachSample(p: Profile, fromUs: number, toUs: number, fn: (id: number, t: number, dtUs: number) => void): void {
  let t = p.startTime;
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (t < fromUs || t >= toUs) continue;
    fn(samples[i]!, t, Math.max(0, deltas[i + 1] ?? 0));
  }
}

/** The heaviest call stacks (leaf first, `depth` frames) of one profile in the window: what a layer's time is spent on. */
export function topStacks(file: string, fromUs: number, toUs: number, depth: number, top: number): string[] {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const name = (n: Node) => `${n.callFrame.functionName || '(anonymous)'}${n.callFrame.url ? ` ${n.callFrame.url.replace(/.*\/(dist|node_modules)\//, '')}:${n.callFrame.lineNumber + 1}` : ''}`;
  const stacks = new Map<string, number>();
  forEachSample(p, fromUs, toUs, (leaf, _t, dt) => {
    if (byId.get(leaf)!.callFrame.functionName === '(idle)') return;
    const chain: string[] = [];
    for (let id: number | undefined = leaf; id !== undefined && chain.length < depth; id = parent.get(id)) if (byId.get(id)!.callFrame.functionName !== '(root)') chain.push(name(byId.get(id)!));
    const k = chain.join(' < ');
    stacks.set(k, (stacks.get(k) ?? 0) + dt);
  });
  return [...stacks].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`);
}

if (isMain(import.meta.url)) {
  const opts = { from: { type: 'string' }, to: { type: 'string' }, messages: { type: 'string', default: '0' }, stacks: { type: 'string' }, activities: { type: 'boolean', default: false }, top: { type: 'string', default: '25' } } as const;
  const { values, positionals } = parseArgs({ allowPositionals: true, options: opts });
  const from = values.from === undefined ? -Infinity : Number(values.from);
  const to = values.to === undefined ? Infinity : Number(values.to);
  for (const d of positionals) {
    // --stacks N: the heaviest N-frame stacks of every profile; otherwise the layer table of the directory.
    if (values.stacks !== undefined) for (const f of findProfiles(d)) process.stdout.write(`\n${f}\n${topStacks(f, from, to, Number(values.stacks), Number(values.top)).join('\n')}\n`);
    else if (values.activities === true) process.stdout.write(activityTable(d, from, to, Number(values.messages)).join('\n') + '\n');
    else process.stdout.write(layerTable(d, from, to, Number(values.messages)).join('\n') + '\n');
  }
}
