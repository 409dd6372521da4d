/**
 * A picture of the Grafana dashboard (docs/grafana/iris-onprem.json) on real data, where Grafana itself cannot
 * be installed: starts an on-prem server (dist/, 2 workers) and a real Prometheus scraping it every second,
 * loads the server with the bench harness in phases of rising rate over a steady background (20 SDK clients at
 * 40 messages/s, a trickle of bad frames and of refused connects, so the error panels have something to show), then runs every panel's PromQL through
 * /api/v1/query_range (variables interpolated as Grafana does, scripts/lib/dashboard.ts), draws the panels
 * (scripts/lib/dashboard-render.ts) and screenshots the page with Debian's chromium through playwright-core.
 *
 *   npm run dashboard:preview                       # writes docs/grafana-dashboard.png
 *   npm run dashboard:preview -- --phase 20 --rates 300,900,1800 --connections 200 --png out.png --html out.html
 *
 * Bounded: the phases, a few seconds of drain, then everything it started is stopped by pid.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { WebSocket } from 'ws';
import { freePort, startOnprem, type Server } from './bench/servers.js';
import { flatPanels, interpolate, legend, loadDashboard, resolveVariables } from './lib/dashboard.js';
import { IrisClient } from '../client/index.js';
import { renderPage, type DrawnPanel } from './lib/dashboard-render.js';
import { mintToken } from './token.js';
import { Prometheus } from './lib/prometheus.js';
import { ROOT } from './lib/server.js';

const CHROMIUM = '/usr/bin/chromium';
const SECRET = 'dashboard-preview-secret';

const { values } = parseArgs({
  options: {
    phase: { type: 'string', default: '20' },
    rates: { type: 'string', default: '300,900,1800' },
    connections: { type: 'string', default: '200' },
    png: { type: 'string', default: join(ROOT, 'docs/grafana-dashboard.png') },
    html: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log('options: --phase SECONDS (per rate, 20)  --rates 300,900,1800 (messages/s)  --connections 200  --png FILE  --html FILE');
  process.exit(0);
}
const phaseS = Number(values.phase);
const rates = values.rates!.split(',').map(Number);
const connections = Number(values.connections);
if (!(phaseS >= 3 && phaseS <= 600) || rates.some((r) => !(r > 0)) || !(connections >= 2)) throw new Error('bad --phase, --rates or --connections');
if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: install chromium (apt-get install chromium)`);

/** One bench run against the server (fixed rate, no baseline), bounded by its own duration plus a guard. */
function bench(url: string, rate: number, out: string): Promise<void> {
  const args = ['--import', 'tsx', join(ROOT, 'scripts/bench/run.ts'), '--target', 'url', '--url', url, '--secret', SECRET, '--baseline', 'none', '--mode', 'fixed', '--connections', String(connections), '--rate', String(rate), '--warmup', '1', '--duration', String(phaseS), '--drain', '5', '--out', out, '--quiet'];
  return new Promise((res, rej) => {
    const child = spawn('sh', [join(ROOT, 'scripts/node.sh'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (text += d));
    const guard = setTimeout(() => child.kill('SIGINT'), (phaseS + 90) * 1000);
    child.once('exit', (code) => {
      clearTimeout(guard);
      if (code === 0) res();
      else rej(new Error(`bench at ${rate}/s exited ${code}:\n${text.slice(-3000)}`));
    });
  });
}

/**
 * Background load that lasts until the range ends, so the stat panels (last value) show a live server rather
 * than the silence after the last bench phase: `users` SDK clients sending round-robin at `rate`/s, bad frames
 * on one raw socket, and a refused connect (wrong signature) every two seconds.
 */
function background(url: string, users: number, rate: number): { stop: () => Promise<void> } {
  let stopped = false;
  const clients = Array.from({ length: users }, (_, i) => new IrisClient({ url, token: () => mintToken(`preview-${i}`, { secret: SECRET, ttl: '1h' }), device: 'd1' }));
  const chat = (async () => {
    await Promise.all(clients.map((c) => c.connect()));
    for (let i = 0; !stopped; i++) {
      void clients[i % users]!.send(`preview-${(i + 1) % users}`, `background ${i}`).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 1000 / rate));
    }
    await Promise.all(clients.map((c) => c.close()));
  })();
  const noise = (async () => {
    const ws = new WebSocket(url, ['iris.v1', `bearer.${await mintToken('preview-noisy', { secret: SECRET, ttl: '1h' })}`]);
    ws.on('error', () => undefined);
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ t: 'hello', device: 'd1', cursor: 0 }));
    const bad = await mintToken('preview-refused', { secret: 'not-the-secret', ttl: '1h' });
    for (let i = 0; !stopped; i++) {
      if (ws.readyState === ws.OPEN) ws.send('not a frame');
      if (i % 8 === 0) {
        const r = new WebSocket(url, ['iris.v1', `bearer.${bad}`]);
        r.on('error', () => undefined);
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    ws.close();
  })();
  return {
    stop: async () => {
      stopped = true;
      await Promise.all([chat, noise]);
    },
  };
}

let server: Server | null = null;
let prom: Prometheus | null = null;
let bg: { stop: () => Promise<void> } | null = null;
const work = mkdtempSync(join(tmpdir(), 'iris-dash-preview-'));
try {
  const port = await freePort();
  server = await startOnprem({ profileDir: null, port, workers: 2, dataDir: join(work, 'data'), keepData: false, secret: SECRET, args: ['--max-errors-in-row', '1000000'] });
  prom = await Prometheus.start({ target: `127.0.0.1:${port}`, scrapeIntervalS: 1 });
  console.log(`server ${server.url} (pid ${server.pid}), prometheus ${prom.base} (pid ${prom.pid})`);
  // Prometheus applies its first target list a few seconds after start: the range begins at the first scrape.
  const first = Date.now() + 30_000;
  while (!(await prom.targets()).some((t) => t.health === 'up')) {
    if (Date.now() > first) throw new Error(`prometheus never scraped the server:\n${prom.log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const from = Math.floor(Date.now() / 1000);
  bg = background(server.url, 20, 40);
  const quiet = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await quiet(5000);
  for (const [i, rate] of rates.entries()) {
    console.log(`phase ${i + 1}/${rates.length}: ${connections} connections, ${rate} messages/s for ${phaseS} s`);
    await bench(server.url, rate, join(work, `bench-${i}`));
  }
  // The background alone for a while, so the last phase's drain shows; then the range ends, load still on.
  await quiet(8000);
  const to = Math.floor(Date.now() / 1000);

  const dash = loadDashboard();
  const vars = await resolveVariables(dash, prom);
  const stepS = 1;
  const panels: DrawnPanel[] = [];
  let targets = 0;
  const empty: string[] = [];
  for (const panel of flatPanels(dash)) {
    const series = [];
    for (const t of panel.targets ?? []) {
      const q = interpolate(t.expr, { vars, intervalS: stepS, scrapeS: prom.scrapeIntervalS, rangeS: to - from });
      const rs = await prom.queryRange(q, from, to, stepS);
      targets++;
      if (rs.length === 0) empty.push(`${panel.title}/${t.refId}`);
      for (const r of rs) series.push({ name: legend(t.legendFormat, r.metric), points: r.values!.map(([ts, v]) => [ts, Number(v)] as [number, number]) });
    }
    panels.push({ panel, series });
  }
  await bg.stop();
  console.log(`${targets} targets queried; without series (no such event in the run): ${empty.join(', ') || 'none'}`);
  const html = renderPage({
    title: dash.title,
    subtitle: `${new Date(from * 1000).toISOString().slice(0, 19)}Z – ${new Date(to * 1000).toISOString().slice(11, 19)}Z · job=${vars.get('job')} · worker=${vars.get('worker')} · bench phases of ${connections} connections at ${rates.join(' → ')} messages/s, ${phaseS} s each, over 20 clients at 40 messages/s; 2 workers, scrape every ${prom.scrapeIntervalS} s`,
    caption: 'Rendered by scripts/dashboard-preview.ts (npm run dashboard:preview) from the panels of docs/grafana/iris-onprem.json and Prometheus 2.42 query_range data of a live on-prem server. Not a Grafana screenshot: Grafana was not installable here.',
    from,
    to,
    panels,
  });
  if (values.html) writeFileSync(values.html, html);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 }, deviceScaleFactor: 1 });
    await page.setContent(html);
    await page.screenshot({ path: values.png!, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(`wrote ${values.png}${values.html ? ` and ${values.html}` : ''}`);
} finally {
  await bg?.stop();
  await prom?.stop();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
}
