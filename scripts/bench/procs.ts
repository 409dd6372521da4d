/**
 * The client processes of a load run, seen from the coordinator: which connections each one gets (`plan`), and
 * one handle per process (`Proc`) that forks scripts/bench/client.ts, keeps its latest totals (from its ticks)
 * and hands the coordinator its other messages one at a time (`next`).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { now, type ConnSpec, type FromClient, type ToClient, type Totals } from './common.js';
import type { LoadSpec } from './results.js';
import { ROOT } from './servers.js';

const CLIENT = join(ROOT, 'scripts/bench/client.ts');

/** Assigns connections to processes: both ends of a pair in the same process (one clock for its latency). */
export function plan(spec: Pick<LoadSpec, 'pattern' | 'connections' | 'processes' | 'sourceAddresses'>, runId: string): ConnSpec[][] {
  const n = spec.pattern === 'pairs' ? spec.connections - (spec.connections % 2) : spec.connections;
  const K = spec.processes;
  const out: ConnSpec[][] = Array.from({ length: K }, () => []);
  const addr = (i: number) => (spec.sourceAddresses.length === 0 ? null : spec.sourceAddresses[i % spec.sourceAddresses.length]!);
  const user = (i: number) => `b${runId}-${i}`;
  if (spec.pattern === 'pairs') {
    for (let p = 0; p < n / 2; p++) {
      const a = 2 * p;
      const b = a + 1;
      const proc = out[p % K]!;
      proc.push({ idx: a, user: user(a), to: b, toUser: user(b), room: p, localAddress: addr(a) });
      proc.push({ idx: b, user: user(b), to: a, toUser: user(a), room: p, localAddress: addr(b) });
    }
  } else {
    out[0]!.push({ idx: 0, user: user(0), to: -1, toUser: '', room: 0, localAddress: addr(0) });
    for (let i = 1; i < n; i++) out[(i - 1) % K]!.push({ idx: i, user: user(i), to: 0, toUser: user(0), room: 0, localAddress: addr(i) });
  }
  return out;
}

export class Proc {
  readonly child: ChildProcess;
  totals: Totals = { sent: 0, acked: 0, errored: 0, pending: 0, deliveredUnique: 0, duplicates: 0, receipts: 0, closed: 0, opened: 0 };
  errors: Record<string, number> = {};
  lastTickAt = 0;
  exited = false;
  private queue: FromClient[] = [];
  private waiters: (() => void)[] = [];

  constructor(
    readonly id: number,
    prof: string | null,
    onTick: (p: Proc, m: Extract<FromClient, { t: 'tick' }>) => void,
    onFatal: (msg: string) => void,
  ) {
    this.child = fork(CLIENT, [], {
      cwd: ROOT,
      execArgv: ['--import', 'tsx', ...(prof ? ['--cpu-prof', '--cpu-prof-dir', join(prof, 'clients')] : [])],
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (m: FromClient) => {
      if (m.t === 'tick') {
        this.totals = m.totals;
        this.errors = m.errors;
        this.lastTickAt = now();
        onTick(this, m);
        return;
      }
      if (m.t === 'fatal') onFatal(`client process ${this.id}: ${m.message}`);
      this.queue.push(m);
      this.wake();
    });
    this.child.on('exit', (code) => {
      this.exited = true;
      if (code !== 0 && code !== null) onFatal(`client process ${this.id} exited with code ${code}`);
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(m: ToClient): void {
    if (!this.exited) this.child.send(m);
  }

  async next<T extends FromClient['t']>(t: T, timeoutMs: number): Promise<Extract<FromClient, { t: T }>> {
    const deadline = now() + timeoutMs;
    for (;;) {
      const i = this.queue.findIndex((m) => m.t === t);
      if (i >= 0) return this.queue.splice(i, 1)[0] as Extract<FromClient, { t: T }>;
      if (this.exited) throw new Error(`client process ${this.id} exited while waiting for "${t}"`);
      const left = deadline - now();
      if (left <= 0) throw new Error(`client process ${this.id}: no "${t}" within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          r();
        });
      });
    }
  }
}