/**
 * The loopback cluster against single-box Iris, in one run (issue 13): 3 nats-server (Debian's 2.9) + 3 Iris
 * on-prem nodes (one worker each unless --workers, cluster mode) versus one Iris server with one worker, on this machine, driven
 * by the same load generator (scripts/bench/run.ts --target url, 1:1 pairs, open loop at a fixed rate). Clients
 * connect to node0 only, so about 2/3 of the users are relayed to the other nodes and most messages cross nodes
 * over NATS: the worst case of this version (a load balancer does not change the share: any node owns ~1/3).
 *
 *   npm run build && sh scripts/node.sh --import tsx scripts/bench/cluster-e2e.ts [--rate 500] [--connections 100] [--duration 10]
 *
 * Prints a markdown table (throughput, ack and delivery p50/p99, server CPU per message: every Iris process and,
 * for the cluster, every nats-server, read from /proc before and after). Failover time is measured by
 * test/cluster/onprem-cluster.test.ts (docs/ARCHITECTURE.md). Everything it starts is stopped by pid.
 *
 * --workers N[,M...]: workers per cluster node (default 1; each worker is its own cluster member, `<node>.<i>`);
 * with a list, one fresh cluster (NATS and nodes) per count, one after the other in the same run, for comparison.
 *
 * Where the CPU goes: the cluster's CPU is also split into Iris and nats-server, measured first over --idle
 * seconds of the settled cluster with no client (its standing cost), and the log records appended per message
 * are counted. --profile DIR runs every Iris process under node --cpu-prof and cuts the profiles into the idle
 * and the loaded window, by layer and by activity (scripts/bench/cluster-profile.ts). --skip-single: cluster only.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEV_SECRET } from '../../auth/config.js';
import { connectCluster, DEFAULT_NAMES } from '../../cluster/nats.js';
import { candidateOwner } from '../../cluster/partition.js';
import { NatsCluster } from '../../test/cluster/nats-harness.js';
import { freePorts } from '../../test/cluster/ports.js';
import { activityTable, layerTable } from './cluster-profile.js';
import { freePort, ROOT, startOnprem, type Server } from './servers.js';

const { values } = parseArgs({
  options: {
    rate: { type: 'string', default: '500' },
    connections: { type: 'string', default: '100' },
    duration: { type: 'string', default: '10' },
    partitions: { type: 'string', default: '64' },
    out: { type: 'string' },
    // CPU profiles of every Iris process (node --cpu-prof) into DIR, cut into the idle and the loaded window by layer.
    profile: { type: 'string' },
    // Seconds of the settled cluster with no clients, measured before the load (idle cost: leases, heartbeats, ticks).
    idle: { type: 'string', default: '10' },
    'skip-single': { type: 'boolean', default: false },
    workers: { type: 'string', default: '1' },
  },
});
const WORKER_COUNTS = values.workers!.split(',').map(Number);
if (WORKER_COUNTS.some((w) => !Number.isInteger(w) || w < 1 || w > 16)) throw new Error('--workers: worker counts per node, 1..16, comma-separated');
/** The cluster members of `id` with `workers` workers (onprem/cluster/config.ts memberConfig). */
const membersOf = (id: string, workers: number): string[] => (workers === 1 ? [id] : Array.from({ length: workers }, (_, i) => `${id}.${i}`));
const PARTITIONS = Number(values.partitions);
const IDS = ['node0', 'node1', 'node2'];
const out = values.out ?? join(ROOT, 'bench-results', `${new Date().toISOString().replace(/[:.]/g, '-')}-cluster`);
mkdirSync(out, { recursive: true });

/** CPU seconds (user + system) of these processes and their descendants, from /proc. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  const seen = new Set<number>();
  const walk = (pid: number) => {
    if (seen.has(pid)) return;
    seen.add(pid);
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
      if (kids !== '') for (const k of kids.split(/\s+/)) walk(Number(k));
    } catch {
      // Gone.
    }
  };
  for (const p of pids) walk(p);
  return ticks / 100;
}

interface Row {
  what: string;
  delivered: number;
  ackP50: number;
  ackP99: number;
  delP50: number;
  delP99: number;
  cpuCores: number;
  cpuUsPerMsg: number;
  /** The cluster's CPU split: Iris processes and nats-servers, cores over the run. */
  split?: { irisCores: number; natsCores: number };
  /** Cluster rows: the idle cost measured before the load, the log appends of the run, the profiles' directory. */
  cluster?: { idle: { fromUs: number; toUs: number; irisCores: number; natsCores: number }; appends: number; profileDir: string };
  /** Monotonic µs at the start and end of the run, to cut the profiles. */
  fromUs: number;
  toUs: number;
}

const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);

function bench(label: string, url: string, pids: number[], natsPids: number[] = []): Row {
  const dir = join(out, label.replace(/[^A-Za-z0-9]+/g, '-'));
  const before = cpuSeconds(pids);
  const natsBefore = cpuSeconds(natsPids);
  const fromUs = monoUs();
  const t0 = performance.now();
  const args = ['scripts/node.sh', '--import', 'tsx', 'scripts/bench/run.ts', '--target', 'url', '--url', url, '--baseline', 'none', '--mode', 'fixed'];
  args.push('--rate', values.rate!, '--connections', values.connections!, '--duration', values.duration!, '--warmup', '2', '--drain', '5', '--out', dir);
  const r = spawnSync('sh', args, { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`bench of ${label} failed (${r.status})`);
  const toUs = monoUs();
  const cpu = cpuSeconds(pids) - before;
  const natsCpu = cpuSeconds(natsPids) - natsBefore;
  const secs = (performance.now() - t0) / 1000;
  const res = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as { runs: { result: { phases: { deliveredRate: number; sent: number; ack: { p50: number; p99: number } | null; deliver: { p50: number; p99: number } }[] } }[] };
  const p = res.runs[0]!.result.phases[0]!;
  // Per message: the CPU of the whole run (warmup, window, drain, connects) over the messages of the whole run.
  const offered = Number(values.rate) * (Number(values.duration) + 2);
  return {
    what: label,
    delivered: Math.round(p.deliveredRate),
    ackP50: p.ack?.p50 ?? NaN,
    ackP99: p.ack?.p99 ?? NaN,
    delP50: p.deliver.p50,
    delP99: p.deliver.p99,
    cpuCores: Math.round((cpu / secs) * 100) / 100,
    cpuUsPerMsg: Math.round((cpu / offered) * 1e6),
    split: natsPids.length > 0 ? { irisCores: Math.round(((cpu - natsCpu) / secs) * 1000) / 1000, natsCores: Math.round((natsCpu / secs) * 1000) / 1000 } : undefined,
    fromUs,
    toUs,
  };
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const base = mkdtempSync(join(tmpdir(), 'iris-cluster-bench-'));
  const servers: Server[] = [];
  let nats: NatsCluster | null = null;
  try {
    // Single box first, alone on the machine.
    if (values['skip-single'] !== true) {
      const profileDir = values.profile === undefined ? null : join(values.profile, 'single');
      const single = await startOnprem({ profileDir, port: await freePort(), workers: 1, dataDir: join(base, 'single'), keepData: false, secret: DEV_SECRET, args: [] });
      servers.push(single);
      rows.push(bench('single box, 1 worker', single.url, [single.pid ?? 0]));
      await single.stop();
      servers.length = 0;
    }

    for (const workers of WORKER_COUNTS) {
      // A fresh NATS cluster and fresh nodes per worker count: no run inherits another's log or leases.
      nats = await NatsCluster.start(3);
      const members = IDS.flatMap((id) => membersOf(id, workers));
      const profileRoot = values.profile === undefined ? null : join(values.profile, workers === 1 ? 'cluster' : `cluster-w${workers}`);
      for (const id of IDS) {
        const args = ['--cluster-nats', nats.urls().join(','), '--cluster-node', id, '--cluster-partitions', String(PARTITIONS), '--cluster-pipe-port', String(await freePorts(workers))];
        const profileDir = profileRoot === null ? null : join(profileRoot, id);
        servers.push(await startOnprem({ profileDir, port: await freePort(), workers, dataDir: join(base, `${id}-w${workers}`), keepData: false, secret: DEV_SECRET, args }));
      }
      const probe = await connectCluster(nats.urls());
      for (let settled = false; !settled; ) {
        settled = true;
        for (let p = 0; p < PARTITIONS && settled; p++) {
          const e = await probe.leases.get(`p.${p}`).catch(() => null);
          settled = (e && e.length > 0 ? e.json<{ node: string }>().node : '') === candidateOwner(p, members);
        }
        if (!settled) await new Promise((r) => setTimeout(r, 200));
      }
      const natsPids = nats.nodes.map((n) => n.child?.pid).filter((p): p is number => p !== undefined);
      const irisPids = servers.map((s) => s.pid ?? 0);
      // Idle: the settled cluster with no client, so that its standing cost is not charged to messages.
      const idle = { fromUs: 0, toUs: 0, irisCores: 0, natsCores: 0 };
      const idleSecs = Number(values.idle);
      const i0 = cpuSeconds(irisPids);
      const n0 = cpuSeconds(natsPids);
      idle.fromUs = monoUs();
      await new Promise((r) => setTimeout(r, idleSecs * 1000));
      idle.toUs = monoUs();
      idle.irisCores = Math.round(((cpuSeconds(irisPids) - i0) / idleSecs) * 1000) / 1000;
      idle.natsCores = Math.round(((cpuSeconds(natsPids) - n0) / idleSecs) * 1000) / 1000;
      // Log records per message: every append is one R3 write on three servers, the cluster's main cost.
      const logSeq = async () => (await probe.jsm.streams.info(DEFAULT_NAMES.logStream)).state.last_seq;
      const seq0 = await logSeq();
      const row = bench(`cluster: 3 Iris x ${workers} worker${workers === 1 ? '' : 's'} + 3 NATS, clients on node0`, servers[0]!.url, [...irisPids, ...natsPids], natsPids);
      row.cluster = { idle, appends: (await logSeq()) - seq0, profileDir: profileRoot ?? '' };
      rows.push(row);
      await probe.nc.close();
      for (const s of servers) await s.stop().catch(() => undefined);
      // The nodes' stderr (lease losses, takeovers) beside the results, to explain a slow or costly run.
      servers.forEach((s, i) => writeFileSync(join(out, `${IDS[i] ?? `server${i}`}-w${workers}.log`), s.output()));
      servers.length = 0;
      nats.stop();
      nats = null;
    }
  } finally {
    for (const s of servers) await s.stop().catch(() => undefined);
    nats?.stop();
    rmSync(base, { recursive: true, force: true });
  }
  const lines = [
    `Offered ${values.rate} msg/s, ${values.connections} connections (1:1 pairs), ${values.duration} s window, ${PARTITIONS} partitions.`,
    '',
    '| Setup | delivered msg/s | ack p50 / p99 ms | delivery p50 / p99 ms | server CPU (cores) | server CPU per message |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.what} | ${r.delivered} | ${r.ackP50} / ${r.ackP99} | ${r.delP50} / ${r.delP99} | ${r.cpuCores} | ${r.cpuUsPerMsg} µs |`),
  ];
  const offered = Number(values.rate) * (Number(values.duration) + 2);
  for (const c of rows) {
    if (!c.split || !c.cluster) continue;
    const { idle, appends, profileDir } = c.cluster;
    lines.push('', `**${c.what}**: idle (${values.idle} s, no clients) Iris ${idle.irisCores} cores, nats-server ${idle.natsCores} cores; loaded run Iris ${c.split.irisCores} cores, nats-server ${c.split.natsCores} cores.`);
    lines.push(`Log appends (IRIS_LOG records) in the loaded run: ${appends}, ${(appends / offered).toFixed(2)} per message.`);
    if (values.profile === undefined) continue;
    // The profiles are written when the nodes exit (stopped above).
    lines.push('', `Windows (monotonic µs, for scripts/bench/cluster-profile.ts --from --to): idle ${idle.fromUs}..${idle.toUs}, loaded ${c.fromUs}..${c.toUs}.`);
    lines.push('', `Iris CPU by layer, idle window (${values.idle} s):`, '', ...layerTable(profileDir, idle.fromUs, idle.toUs, 0));
    lines.push('', `Iris CPU by layer, loaded run (${offered} messages):`, '', ...layerTable(profileDir, c.fromUs, c.toUs, offered));
    lines.push('', 'Iris CPU by activity, idle window:', '', ...activityTable(profileDir, idle.fromUs, idle.toUs, 0));
    lines.push('', 'Iris CPU by activity, loaded run:', '', ...activityTable(profileDir, c.fromUs, c.toUs, offered));
  }
  process.stdout.write(lines.join('\n') + '\n');
}

void main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
