/**
 * Backup and restore of an Iris cluster (issue 13), from any machine that reaches its NATS servers:
 *
 *   sh scripts/node.sh dist/onprem/cluster/backup.js --nats nats://a:4222,nats://b:4222 --partitions 1024 --to /backups/iris-2026-12-01
 *   sh scripts/node.sh dist/onprem/cluster/backup.js --nats nats://a:4222,nats://b:4222 --partitions 1024 --restore /backups/iris-2026-12-01
 *
 * --nats and --partitions default to IRIS_CLUSTER_NATS and IRIS_CLUSTER_PARTITIONS (the nodes' own settings).
 * The backup runs against the running cluster and is a consistent cut at one log sequence (cluster/backup.ts);
 * the restore is refused while any Iris node runs (cluster/restore.ts). docs/OPERATIONS.md "Backups and restore".
 * Exit codes: 0 done, 1 refused or failed (one line on stderr), 2 usage.
 */
import { existsSync, readdirSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { backupCluster } from '../../cluster/backup.js';
import { connectCluster } from '../../cluster/nats.js';
import { restoreCluster } from '../../cluster/restore.js';

const USAGE = 'usage: dist/onprem/cluster/backup.js [--nats <urls>] [--partitions <n>] (--to <new directory> | --restore <backup directory>)\n';
const { values } = parseArgs({
  options: {
    nats: { type: 'string' },
    partitions: { type: 'string' },
    to: { type: 'string' },
    restore: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
const nats = (values.nats ?? process.env['IRIS_CLUSTER_NATS'] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');
const partitions = Number(values.partitions ?? process.env['IRIS_CLUSTER_PARTITIONS'] ?? '1024');
if (values.help || nats.length === 0 || (values.to === undefined) === (values.restore === undefined)) {
  process.stderr.write(USAGE);
  process.exit(values.help ? 0 : 2);
}
if (!Number.isInteger(partitions) || partitions < 1) {
  process.stderr.write(`backup: --partitions must be a positive integer, got ${values.partitions ?? process.env['IRIS_CLUSTER_PARTITIONS']}\n`);
  process.exit(2);
}

function fail(e: unknown): never {
  process.stderr.write(`backup: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}

const to = values.to !== undefined ? resolve(values.to) : null;
if (to && existsSync(to) && readdirSync(to).length > 0) fail(`${to} exists and is not empty`);
const conn = await connectCluster(nats, undefined, 'iris-backup').catch(fail);
try {
  const t0 = performance.now();
  if (to) {
    let records = 0;
    const info = await backupCluster(conn, partitions, to, { onPartition: (_p, _b, n) => void (records += n) });
    const bytes = info.files.reduce((s, f) => s + f.bytes, 0);
    process.stdout.write(
      `backup: ${info.files.length} partition file(s), ${bytes} bytes, ${records} log record(s) replayed, ${info.empty.length} empty partition(s), cut at log seq ${info.logSeq}, in ${Math.round(performance.now() - t0)} ms -> ${to}\n`,
    );
  } else {
    const r = await restoreCluster(conn, partitions, resolve(values.restore!));
    if (r.staleKeys.length > 0) process.stdout.write(`restore: released ${r.staleKeys.length} key(s) of nodes that were not running\n`);
    process.stdout.write(`restore: ${r.restored.length} partition(s) restored, ${r.emptied.length} emptied, in ${Math.round(performance.now() - t0)} ms; start the nodes now\n`);
  }
} catch (e) {
  await conn.nc.close().catch(() => undefined);
  fail(e);
}
await conn.nc.close();
