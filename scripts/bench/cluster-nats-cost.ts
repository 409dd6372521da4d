/**
 * What the nats-servers spend per operation of the cluster's message path (issue 13), apart: an R3 log append
 * (what one Storage record is) and a request/reply call between two nodes connected to DIFFERENT servers (what
 * one forward, one receipt or one presence call is, answered at once). Each is paced at a fixed rate for a fixed
 * time on a fresh 3-server loopback cluster; nats-server CPU is read from /proc before and after.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/cluster-nats-cost.ts [--rate 600] [--seconds 10] [--body 300]
 *
 * The cluster-e2e bench measures ~2.9 records and ~2 calls (forward, receipt) per message at 200 msg/s; this
 * says which of the two the servers' CPU follows.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PartitionLog } from '../../cluster/log.js';
import { connectCluster } from '../../cluster/nats.js';
import { NatsCluster } from '../../test/cluster/nats-harness.js';

const { values } = parseArgs({ options: { rate: { type: 'string', default: '600' }, seconds: { type: 'string', default: '10' }, body: { type: 'string', default: '300' } } });
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);
const BODY = new Uint8Array(Number(values.body)).fill(120);

function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / 100;
}

/** Runs `op` RATE times per second for SECONDS, at most 64 in flight; returns nats-server CPU ms per op. */
async function paced(pids: number[], op: (i: number) => Promise<unknown>): Promise<{ ops: number; cpuMsPerOp: number; cores: number }> {
  const c0 = cpuSeconds(pids);
  const t0 = performance.now();
  const total = RATE * SECONDS;
  const inflight = new Set<Promise<unknown>>();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    while (inflight.size >= 64) await Promise.race(inflight);
    const p = op(i).finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await Promise.all(inflight);
  const secs = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(pids) - c0;
  return { ops: total, cpuMsPerOp: Math.round((cpu * 1e6) / total) / 1000, cores: Math.round((cpu / secs) * 1000) / 1000 };
}

async function main(): Promise<void> {
  const nats = await NatsCluster.start(3);
  try {
    const pids = nats.nodes.map((n) => n.child!.pid!);
    const urls = nats.urls();
    const a = await connectCluster([urls[0]!], undefined, 'cost-a');
    const b = await connectCluster([urls[1]!], undefined, 'cost-b');
    // Settle: stream and bucket leaders elected, nothing else running.
    await new Promise((r) => setTimeout(r, 2000));
    const idle0 = cpuSeconds(pids);
    await new Promise((r) => setTimeout(r, 3000));
    const idleCores = (cpuSeconds(pids) - idle0) / 3;

    // Appends: 64 partitions, one writer each, as owners spread over a node do.
    const logs = Array.from({ length: 64 }, (_, p) => new PartitionLog(a, 1000 + p));
    for (const l of logs) await l.replay(0, () => undefined);
    let n = 0;
    const appends = await paced(pids, (i) => logs[i % 64]!.append(BODY, `cost.${i}.${++n}`));

    // Calls: b answers at once on one subject; a requests (a and b on different servers: routed, as between nodes).
    const sub = b.nc.subscribe('cost.rpc', { callback: (_e, m) => void m.respond(BODY) });
    await b.nc.flush();
    const calls = await paced(pids, () => a.nc.request('cost.rpc', BODY, { timeout: 5000 }));
    sub.unsubscribe();

    console.log(`nats-server CPU per operation, 3 servers on loopback, ${RATE}/s for ${SECONDS} s, ${BODY.length}-byte bodies (idle: ${idleCores.toFixed(3)} cores)`);
    console.log('');
    console.log('| operation | ops | nats-server cores | nats-server CPU per op (incl. idle share) |');
    console.log('|---|---|---|---|');
    console.log(`| R3 log append (Nats-Msg-Id + expected last subject seq), 64 partitions | ${appends.ops} | ${appends.cores} | ${appends.cpuMsPerOp} ms |`);
    console.log(`| request/reply between clients on two servers | ${calls.ops} | ${calls.cores} | ${calls.cpuMsPerOp} ms |`);
    await a.nc.close();
    await b.nc.close();
  } finally {
    nats.stop();
  }
}

void main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
