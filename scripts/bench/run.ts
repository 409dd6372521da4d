/**
 * iris bench: drives an Iris server (and, in the same invocation, its raw baseline) through the real protocol
 * and writes result.json, summary.md, report.html and SVG plots. See `--help` and docs/BENCHMARKS.md.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/run.ts --preset smoke
 *
 * Everything is loopback only, bounded in time and count, and stops by itself. Servers this script starts are
 * stopped by their pid / process group; nothing else is touched.
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync, type Dirent } from 'node:fs';
import { availableParallelism, release, totalmem } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { runLoad, type LoadSpec } from './coordinator.js';
import { helpText, parseOptions, UsageError, type Options } from './options.js';
import { checkTargets, compare, summaryMarkdown, writePlots, type RunRecord } from './report.js';
import { externalServer, freePort, ROOT, startOnprem, startRelay, startWrangler, treeRss, type Server } from './servers.js';
import type { Wire } from './common.js';
import { writeHtmlReport } from './html.js';
import { ProgressView, type PhaseStatus } from './progress.js';
import { flameSvg, summarizeProfile } from './profile.js';
import { judgeKill, killLines, killWorker, supervisorTimes, type KillSpec } from './kill.js';
import { ownerOf } from '../../onprem/owner.js';

function findProfiles(dir: string): string[] {
  const out: string[] = [];
  let entries: Dirent[] = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findProfiles(p));
    else if (e.name.endsWith('.cpuprofile')) out.push(p);
  }
  return out.sort();
}

/** profiles.md (top self-time functions of every process) and one flame graph per profile. */
function writeProfiles(dir: string): string {
  const files = findProfiles(dir);
  const md = ['# CPU profiles', '', 'Self time of the busiest functions per process (share of its non-idle samples).', ''];
  for (const f of files) {
    const s = summarizeProfile(f, 15);
    const rel = relative(dir, f);
    const svg = f.replace(/\.cpuprofile$/, '.flame.svg');
    writeFileSync(svg, flameSvg(f, rel));
    md.push(`## ${rel}`, '', `${s.durationMs} ms sampled, ${s.busyShare}% busy — flame graph: ${relative(dir, svg)}`, '', '| self | ms | function |', '|---|---|---|');
    for (const t of s.top) md.push(`| ${t.selfShare}% | ${t.selfMs} | \`${t.name.replace(/\|/g, '\\|')}\` |`);
    md.push('');
  }
  writeFileSync(join(dir, 'profiles.md'), md.join('\n'));
  return `${files.length} profile(s), summary in ${join(relative(process.cwd(), dir) || '.', 'profiles.md')}`;
}

interface RunPlan {
  label: string;
  role: 'sut' | 'baseline';
  server: 'onprem' | 'relay' | 'cloudflare' | 'external';
  wire: Wire;
  target: string;
  workers: number;
  connections: number;
}

/** Every line to stderr goes through the view, so that on a terminal the progress bar stays on the last line. */
const view = new ProgressView(process.stderr);

function log(line: string): void {
  view.log(line);
}

function machine(): Record<string, string | number> {
  let model = 'unknown';
  let fdLimit = 0;
  try {
    model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
    fdLimit = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 0);
  } catch {
    // not Linux
  }
  return {
    cpus: availableParallelism(),
    cpuModel: model,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    kernel: release(),
    fdLimit,
  };
}

function buildPlan(o: Options): RunPlan[] {
  const out: RunPlan[] = [];
  for (const connections of o.connections) {
    const workerCounts = o.target === 'cloudflare' || o.target === 'url' ? [o.workers[0]!] : o.workers;
    for (const w of workerCounts) {
      const workers = Math.max(w, Math.ceil(connections / o.connsPerWorker));
      if (workers !== w) log(`note: ${connections} connections need ${workers} worker processes (fd limit); using ${workers} instead of ${w}`);
      const tag = `w${workers} c${connections}`;
      let sut: RunPlan;
      let base: RunPlan | null = null;
      switch (o.target) {
        case 'onprem':
          sut = { label: `onprem ${tag}`, role: 'sut', server: 'onprem', wire: 'iris', target: 'onprem', workers, connections };
          break;
        case 'url':
          sut = { label: `iris c${connections}`, role: 'sut', server: 'external', wire: 'iris', target: 'iris', workers, connections };
          break;
        case 'relay':
          sut = { label: `relay ${tag}`, role: 'sut', server: 'relay', wire: 'relay', target: 'relay', workers, connections };
          break;
        case 'cloudflare':
          sut = { label: `cf-iris c${connections}`, role: 'sut', server: 'cloudflare', wire: 'iris', target: 'cloudflare', workers: 1, connections };
          break;
      }
      if (o.baseline === 'relay') base = { label: `relay ${tag}`, role: 'baseline', server: 'relay', wire: 'relay', target: 'relay', workers: sut.workers, connections };
      if (o.baseline === 'echo') base = { label: `cf-echo c${connections}`, role: 'baseline', server: 'cloudflare', wire: 'echo', target: 'cloudflare-echo', workers: 1, connections };
      if (base && o.baselineOrder === 'before') out.push(base);
      out.push(sut);
      if (base && o.baselineOrder === 'after') out.push(base);
    }
  }
  return out;
}

function sourceAddresses(connections: number, perAddress: number, runIndex: number): string[] {
  if (connections <= perAddress) return [];
  const n = Math.ceil(connections / perAddress);
  // A different 127.X.0.0/24 block per run, so ports in TIME_WAIT from a previous run are never in the way.
  const second = 1 + ((Math.floor(Date.now() / 1000) + runIndex * 17) % 250);
  return Array.from({ length: n }, (_, k) => `127.${second}.0.${k + 1}`);
}

interface ResultMeta {
  command: string;
  preset: string | null;
  options: Options;
  machine: Record<string, string | number>;
  startedAt: string;
  finishedAt: string;
  runs: RunRecord[];
}

/** result.json, summary.md and the plots of one invocation (also used by --render to redo them from a result.json). */
function writeOutputs(outDir: string, meta: ResultMeta): string {
  const { runs, options: o, machine: m } = meta;
  const comparisons = compare(runs);
  const targets = checkTargets(runs, comparisons);
  const caption = `${meta.command} | ${m['cpus']} x ${m['cpuModel']}, ${m['memoryGiB']} GiB, Node ${m['node']} | ${meta.startedAt}`;
  const plots = writePlots(outDir, runs, caption);
  const header = [
    `# Bench result: ${o.preset ?? o.mode}`,
    '',
    `- command: \`${meta.command}\``,
    `- machine: ${m['cpus']} x ${m['cpuModel']}, ${m['memoryGiB']} GiB RAM, Node ${m['node']}, Linux ${m['kernel']}, fd limit ${m['fdLimit']}`,
    `- started: ${meta.startedAt}; pattern ${o.pattern}; body ${o.size} B; mode ${o.mode}` +
      (o.mode === 'fixed' ? `; rate ${o.rate}/s; warm-up ${o.warmupS} s; measured ${o.durationS} s` : '') +
      (o.mode === 'max' ? `; steps from ${o.startRate}/s x${o.stepFactor}, ${o.warmupS} s warm-up + ${o.durationS} s each; pass = delivered >= ${o.track} x offered and p99 <= ${o.maxP99Ms} ms` : '') +
      (o.mode === 'memory' ? `; settle ${o.settleS} s` : ''),
    `- plots: ${plots.join(', ')}`,
  ];
  const summary = summaryMarkdown(runs, comparisons, targets, header);
  writeFileSync(join(outDir, 'summary.md'), summary);
  const html = writeHtmlReport(outDir, `Bench result: ${o.preset ?? o.mode}`, summary, runs, plots);
  const json = { tool: 'iris-bench', format: 1, ...meta, runs, comparisons, targets, files: ['result.json', 'summary.md', html, ...plots] };
  writeFileSync(join(outDir, 'result.json'), JSON.stringify(json, null, 1) + '\n');
  return summary;
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseOptions(process.argv.slice(2));
  } catch (e) {
    if (e instanceof UsageError) {
      log(`bench: ${e.message}\n\n${helpText()}`);
      return 2;
    }
    throw e;
  }
  const o = parsed.options;
  if (parsed.help) {
    process.stdout.write(helpText() + '\n');
    return 0;
  }
  if (o.render !== null) {
    const dir = resolve(o.render);
    const prev = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as ResultMeta;
    process.stdout.write(writeOutputs(dir, prev));
    log(`bench: re-rendered ${relative(process.cwd(), dir) || '.'} from its result.json (summary.md, report.html, plots)`);
    return 0;
  }
  if (o.rateFrom !== null) {
    const prev = JSON.parse(readFileSync(o.rateFrom, 'utf8')) as { runs: RunRecord[] };
    const sut = prev.runs.find((r) => r.role === 'sut' && r.result.max);
    if (!sut) throw new UsageError(`${o.rateFrom} has no find-the-maximum result of a system under test`);
    o.rate = Math.round(sut.result.max!.rate / 2);
    log(`rate: half of ${sut.label}'s maximum ${sut.result.max!.rate}/s = ${o.rate}/s`);
  }
  const started = new Date();
  const stamp = started.toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const outDir = resolve(o.out ?? join(ROOT, 'bench-results', `${stamp}-${o.preset ?? o.mode}`));
  mkdirSync(outDir, { recursive: true });
  const plan = buildPlan(o);
  log(`bench: ${plan.length} run(s): ${plan.map((p) => p.label).join(', ')}; results in ${relative(process.cwd(), outDir) || '.'}`);

  const live: Server[] = [];
  let shared: Server | null = null;
  const stopAll = async () => {
    for (const s of live.splice(0)) await s.stop().catch(() => undefined);
  };
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    log('bench: interrupted; stopping the servers it started');
    void stopAll().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const runs: RunRecord[] = [];
  let killFailed = false;
  try {
    for (const [i, p] of plan.entries()) {
      let server: Server;
      const port = o.port || (await freePort());
      const profDir = o.profile === null ? null : resolve(o.profile, `${i}-${p.label.replace(/[^A-Za-z0-9]+/g, '-')}`);
      if (p.server === 'onprem') {
        server = await startOnprem({
          port,
          workers: p.workers,
          dataDir: join(ROOT, 'data', 'bench', `${stamp}-${i}`),
          keepData: o.keepData,
          secret: o.secret,
          args: o.serverArgs,
          profileDir: profDir === null ? null : join(profDir, 'server'),
        });
      } else if (p.server === 'relay') {
        server = await startRelay(port, p.workers, profDir === null ? null : join(profDir, 'server'));
      } else if (p.server === 'cloudflare') {
        shared ??= await startWrangler(port, o.secret);
        server = shared;
      } else {
        server = externalServer(o.url!, o.serverPid);
      }
      if (server !== shared) live.push(server);
      else if (!live.includes(server)) live.push(server);
      log(`[${p.label}] server up: ${server.command}`);
      if (o.mode === 'memory' && server.pid !== null) {
        await new Promise((r) => setTimeout(r, 2000));
        log(`[${p.label}] idle server RSS ${(treeRss(server.pid).totalKiB / 1024).toFixed(1)} MiB`);
      }
      let kill: KillSpec | null = null;
      if (o.killWorkerAtMs !== null && p.role === 'sut' && p.server === 'onprem') {
        const pids = server.workerPids ?? [];
        const supervisor = server.pid!;
        const slot = o.killWorker;
        const workers = server.workers;
        log(`[${p.label}] kill mode: worker ${slot} (pid ${pids[slot] ?? '?'} of ${pids.join(',')}) is SIGKILLed ${o.killWorkerAtMs / 1000} s into the window`);
        kill = { atMs: o.killWorkerAtMs, fire: () => killWorker(supervisor, pids, slot), owns: (user) => ownerOf(user, workers) === slot };
      }
      const spec: LoadSpec = {
        label: p.label,
        wire: p.wire,
        url: p.wire === 'echo' ? server.echoUrl! : server.url,
        secret: o.secret,
        pattern: o.pattern,
        mode: o.mode,
        connections: p.connections,
        processes: o.processes || Math.max(1, Math.ceil(p.connections / o.connsPerProcess)),
        sourceAddresses: sourceAddresses(p.connections, o.connsPerAddress, i),
        bodyBytes: o.size,
        rate: o.rate,
        warmupMs: o.warmupS * 1000,
        durationMs: o.durationS * 1000,
        drainMs: o.drainS * 1000,
        startRate: o.startRate,
        stepFactor: o.stepFactor,
        maxRate: o.maxRate,
        bisect: o.bisect,
        pastMax: o.pastMax,
        maxP99Ms: o.maxP99Ms,
        track: o.track,
        settleMs: o.settleS * 1000,
        connectConcurrency: o.connectConcurrency,
        maxInflight: o.maxInflight,
        serverPid: server.pid,
        quiet: o.quiet,
        profileDir: profDir,
        kill,
      };
      let result;
      try {
        const status = (s: PhaseStatus) => view.update({ ...s, run: i + 1, runs: plan.length, elapsedMs: Date.now() - started.getTime() });
        result = await runLoad(spec, log, status);
        // The bar of a finished run would otherwise sit under the lines of the next run's start.
        view.clear();
      } catch (e) {
        view.clear();
        log(`[${p.label}] failed: ${e instanceof Error ? e.message : String(e)}\n--- server output (tail) ---\n${server.output().slice(-3000)}`);
        throw e;
      }
      if (result.kill !== null) {
        // The supervisor logs "died", "started (pid)" and "is back"; the last can follow the drain by a little.
        const k = result.kill;
        const fired = { slot: k.slot, pid: k.pid, at: k.killedAtMs, checked: k.checked };
        const deadline = Date.now() + 10_000;
        while (supervisorTimes(server.lines?.() ?? [], fired).backMs === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
        k.supervisor = supervisorTimes(server.lines?.() ?? [], fired);
        judgeKill(k, result.accounting!);
        for (const line of killLines(p.label, k)) log(line);
        if (!k.pass) killFailed = true;
        // What the server said around the kill (worker warnings, the supervisor's restart), stamped ms after the kill.
        const logFile = join(outDir, `server-${i}.log`);
        writeFileSync(logFile, (server.lines?.() ?? []).map((l) => `${(l.t - k.killedAtMs).toFixed(1).padStart(10)} ms  ${l.text}`).join('\n') + '\n');
        log(`[${p.label}] server output: ${relative(process.cwd(), logFile)}`);
      }
      runs.push({ label: p.label, role: p.role, target: p.target, workers: p.workers, connections: p.connections, server: { kind: server.kind, command: server.command, workers: server.workers }, result });
      if (server !== shared) {
        await server.stop();
        live.splice(live.indexOf(server), 1);
      }
    }
  } finally {
    await stopAll();
  }

  const m = machine();
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  view.clear();
  const summary = writeOutputs(outDir, { command, preset: o.preset, options: o, machine: m, startedAt: started.toISOString(), finishedAt: new Date().toISOString(), runs });
  process.stdout.write(summary);
  if (o.profile !== null) log(`bench: CPU profiles: ${writeProfiles(resolve(o.profile))}`);
  log(`bench: wrote ${join(relative(process.cwd(), outDir) || '.', 'result.json')} (+ summary.md, report.html and plots)`);
  if (killFailed) {
    log('bench: worker-kill run FAILED (see the kill lines above): an acked message was lost or duplicated, or the users were not served again');
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    log(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
