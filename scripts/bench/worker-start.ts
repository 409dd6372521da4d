/**
 * Where a restarted on-prem worker's start-up time goes, phase by phase, in a fresh process like the one the
 * supervisor forks. Used by docs/BENCHMARKS.md "Recovery" to show that with a million undelivered messages the
 * store is not what a restart waits for, and by "Built JavaScript against tsx". The supervisor forks built
 * JavaScript; to time that, run this file as emitted by tsc (the second line), not through tsx:
 *
 *   sh scripts/node.sh --import tsx scripts/bench/worker-start.ts <worker-N.sqlite> [user]
 *   sh scripts/node.sh node_modules/typescript/bin/tsc -p tsconfig.json --noEmit false --outDir tmp/js \
 *     && sh scripts/node.sh tmp/js/scripts/bench/worker-start.js <worker-N.sqlite> [user]
 *
 * Prints one JSON line, ms: Node boot until this module runs (includes registering a loader, if any), loading
 * the worker's dependencies and its own modules, opening the SQLite file (pragmas + migration check, as
 * onprem/storage.ts does for the worker), the recovery query the worker runs at start (onprem/worker/shards.ts
 * Shards.recover(), core/store.ts usersToResume), and the reads of one user's first hello and first deliver page, and the scan its first incoming
 * batch makes (core/store.ts). Read-only on the data: nothing is written (the migration check finds the schema
 * current), so it can run on a copy of a live data dir.
 */
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

export interface WorkerStartPhases {
  bootMs: number;
  depsMs: number;
  ownModulesMs: number;
  openStorageMs: number;
  recoverQueryMs: number;
  firstHelloReadsMs: number;
  /** The user's first incoming batch: the per-sender dedup marks, one scan of its inbox (core/store.ts peerLastN). */
  firstReceiveScanMs: number;
  outboxUsers: number;
  head: number;
}

export async function measure(file: string, user: string): Promise<WorkerStartPhases> {
  const boot = performance.now();
  // The worker's third-party imports first, so its own modules' time is measured apart.
  await import('ws');
  await import('jose');
  await import('prom-client');
  const deps = performance.now();
  await import('../../onprem/worker.js');
  const own = performance.now();
  const { GroupCommitStorage } = await import('../../onprem/storage.js');
  const { MailboxStore } = await import('../../core/store.js');
  const t0 = performance.now();
  const storage = new GroupCommitStorage(file, { windowMs: 0, maxBatch: 1024 });
  const t1 = performance.now();
  const users = storage.sql.all<{ user: string }>(`SELECT DISTINCT user FROM outbox`);
  const t2 = performance.now();
  const store = new MailboxStore(storage.sql, user);
  const row = store.userRow();
  store.deviceCursor('d1');
  store.devices();
  store.inboxRange(0, 64);
  const t3 = performance.now();
  store.peerLastN('nobody');
  const t4 = performance.now();
  storage.close();
  const r = (x: number) => Math.round(x * 10) / 10;
  return {
    bootMs: r(boot),
    depsMs: r(deps - boot),
    ownModulesMs: r(own - deps),
    openStorageMs: r(t1 - t0),
    recoverQueryMs: r(t2 - t1),
    firstHelloReadsMs: r(t3 - t2),
    firstReceiveScanMs: r(t4 - t3),
    outboxUsers: users.length,
    head: row.next_seq - 1,
  };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [file, user = 'u0'] = process.argv.slice(2);
  if (!file) {
    process.stderr.write('usage: sh scripts/node.sh --import tsx scripts/bench/worker-start.ts <worker-N.sqlite> [user]\n');
    process.exit(2);
  }
  measure(file, user).then(
    (p) => process.stdout.write(JSON.stringify(p) + '\n'),
    (e: unknown) => {
      process.stderr.write(`worker-start: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
