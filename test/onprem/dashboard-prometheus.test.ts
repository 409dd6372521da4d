import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient } from '../../client/index.js';
import { interpolate, loadDashboard, queryPanels, resolveVariables, type Dashboard } from '../../scripts/lib/dashboard.js';
import { Prometheus, checkRules, prometheusMissing } from '../../scripts/lib/prometheus.js';
import { RawClient, ROOT, removeDir, sdkClient, startServer, token, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * The Grafana dashboard (docs/grafana/iris-onprem.json) against a REAL Prometheus (Debian's 2.42, run by the
 * test on a free loopback port) scraping a real on-prem server every second while clients send messages, ack
 * them, get refused, get replaced and send bad frames. Every panel target is interpolated as Grafana would
 * (its variables resolved through label_values, $__rate_interval from the scrape interval) and run through
 * /api/v1/query: it must parse and return a series. test/unit/grafana.test.ts only checks names; this checks
 * that the PromQL works on the data the server really exports. The alert rules go through promtool and
 * through Prometheus's own rule loading. Without /usr/bin/prometheus the test fails with the install command.
 */

const ALERTS = join(ROOT, 'docs/grafana/alerts.yml');

/**
 * Targets whose series exist only after an event this test does not cause, with the reason. They must still
 * parse and name metrics the server declares (its /metrics HELP/TYPE lines, seen through /api/v1/metadata).
 */
const MAY_BE_EMPTY: Record<string, string> = {
  // Labelled by result, so no series before the first webhook call: no push webhook is configured here
  // (test/onprem/push.test.ts covers pushes). Its dead-letter count (target B) and the restart counts, empty
  // for the same reason, fall back to `or vector(0)` in the dashboard and must return a series.
  'Push webhooks/A': 'no push webhook configured',
};

const MISSING = prometheusMissing();

describe('Grafana dashboard queries against a real Prometheus', () => {
  let server: ServerProcess;
  let dataDir: string;
  let prom: Prometheus | null = null;
  const clients: IrisClient[] = [];
  const raws: RawClient[] = [];
  let dash: Dashboard;
  let vars: Map<string, string>;
  let stopTraffic = false;
  let traffic: Promise<void> = Promise.resolve();
  const t0 = Date.now();
  const [alice] = usersOn(0, 2, 'dash-alice-');
  const [bob] = usersOn(1, 2, 'dash-bob-');

  beforeAll(async () => {
    if (MISSING) throw new Error(MISSING);
    let port: number;
    ({ server, dataDir, port } = await startServer({ workers: 2, env: { IRIS_MAX_ERRORS_IN_ROW: '1000000' } }));
    prom = await Prometheus.start({ target: `127.0.0.1:${port}`, scrapeIntervalS: 1, ruleFiles: [ALERTS] });
    const url = `ws://127.0.0.1:${port}/v1/connect`;
    const a = sdkClient(url, alice!);
    const b = sdkClient(url, bob!);
    clients.push(a, b);
    await Promise.all([a.connect(), b.connect()]);
    // Messages both ways across workers (forwards, peer calls, COMMITs, deliveries and acks)...
    await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 ? a.send(bob!, `m${i}`) : b.send(alice!, `m${i}`))));
    // ...connections that arrive on the non-owner worker (hand-offs), one refused for a bad signature, one
    // replaced by the same device (server close 4001), and bad frames (error frames by code).
    for (let i = 0; i < 6; i++) {
      const c = await RawClient.open(url, await token(bob!));
      c.send({ t: 'hello', device: `raw${i}`, cursor: 0 });
      await c.next('welcome');
      raws.push(c);
    }
    await expect(RawClient.open(url, await token(bob!, { secret: 'not-the-secret' }))).rejects.toMatchObject({ status: 401 });
    const again = await RawClient.open(url, await token(bob!));
    again.send({ t: 'hello', device: 'raw0', cursor: 0 });
    await again.next('welcome');
    raws.push(again);
    await raws[0]!.waitClose();
    // A steady trickle until the queries are done, so that every rate window holds increases (the bad frames
    // would earn a 4002 close after IRIS_MAX_ERRORS_IN_ROW, raised above). The pause paces the load; nothing
    // waits on it.
    traffic = (async () => {
      for (let i = 0; !stopTraffic; i++) {
        await a.send(bob!, `trickle ${i}`);
        again.ws.send('not a frame');
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  }, 60_000);

  afterAll(async () => {
    stopTraffic = true;
    await traffic.catch(() => undefined);
    await prom?.stop();
    for (const c of raws) c.close();
    await Promise.all(clients.map((c) => c.close()));
    if (server) {
      const r = await server.stop();
      expect(r.code).toBe(0);
      removeDir(dataDir);
    }
  });

  it('promtool accepts the alert rules', () => {
    const r = checkRules(ALERTS);
    expect(r.ok, r.out).toBe(true);
    expect(r.out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('Prometheus scrapes the server and loads and evaluates every alert rule without error', async () => {
    await waitFor('a healthy scrape', async () => (await prom!.targets()).some((t) => t.health === 'up'), 20_000, 100);
    // Wait until two scrapes saw the trickle, so rates have two samples.
    await waitFor('two scrapes of traffic', async () => (await prom!.query('count_over_time(iris_workers_ready[10s])')).some((s) => Number(s.value![1]) >= 3), 20_000, 100);
    const rules = () => prom!.rules().then((r) => r.groups.flatMap((g) => g.rules));
    await waitFor('every rule evaluated', async () => (await rules()).every((r) => r.health === 'ok'), 20_000, 200);
    const all = await rules();
    expect(all.length).toBe(readFileSync(ALERTS, 'utf8').match(/^\s+- alert: /gm)!.length);
  });

  it('resolves the variables as Grafana does (job and worker, All selected)', async () => {
    dash = loadDashboard();
    vars = await resolveVariables(dash, prom!);
    expect(vars.get('job')).toBe('iris');
    expect(vars.get('worker')).toBe('(0|1)');
  });

  it('runs every panel target: each parses and returns a series (or names declared metrics, where listed)', { timeout: 30_000 }, async () => {
    const rangeS = (Date.now() - t0) / 1000;
    const meta = await prom!.metadata();
    const seen: string[] = [];
    // One deadline for all targets (the data is there after the previous test; this only absorbs a scrape).
    const deadline = Date.now() + 20_000;
    for (const p of queryPanels(dash)) {
      for (const t of p.targets!) {
        const key = `${p.title}/${t.refId}`;
        seen.push(key);
        const q = interpolate(t.expr, { vars, intervalS: 1, scrapeS: 1, rangeS });
        expect(q, key).not.toMatch(/\$/);
        if (key in MAY_BE_EMPTY) {
          // Parses (a PrometheusError otherwise) and names only metrics the server declares.
          await prom!.query(q);
          for (const [, n] of q.matchAll(/\b(iris_[a-z0-9_]+?)(?:_bucket|_sum|_count)?\b/g)) expect(meta.has(n!), `${key}: ${n} is not declared`).toBe(true);
          continue;
        }
        await waitFor(`a series for ${key}: ${q}`, async () => (await prom!.query(q)).length > 0, Math.max(1_000, deadline - Date.now()), 200);
      }
    }
    expect(seen.length).toBeGreaterThan(25);
    // Every listed exception is a real target (a renamed panel must not leave a stale exemption).
    for (const k of Object.keys(MAY_BE_EMPTY)) expect(seen, k).toContain(k);
  });

  it('shows the traffic it was given: messages, errors, refusals, replacements, hand-offs, commit latency', async () => {
    const v = async (q: string): Promise<number[]> => (await prom!.query(q)).map((s) => Number(s.value![1]));
    const positive = async (what: string, q: string) => waitFor(what, async () => (await v(q)).some((x) => x > 0), 15_000, 200);
    await positive('messages accepted', 'sum(rate(iris_messages_accepted_total[4s]))');
    await positive('bad_frame errors', 'sum by (code) (rate(iris_errors_total{code="bad_frame"}[4s]))');
    await positive('refusal for a bad signature', 'sum(iris_connects_refused_total{code="invalid_signature"})');
    await positive('server close 4001 (replaced)', 'sum(iris_server_closes_total{code="4001"})');
    await positive('hand-offs', 'sum(iris_handoffs_total{result="ok"})');
    const p99 = await v('histogram_quantile(0.99, sum by (le) (rate(iris_commit_seconds_bucket[30s])))');
    expect(p99.length).toBe(1);
    expect(Number.isFinite(p99[0]!) && p99[0]! > 0).toBe(true);
  });
});
