/**
 * How long a cluster backup and a restore take (issue 13; cluster/backup.ts, cluster/restore.ts), on a loopback
 * 3-server NATS cluster started here (test/cluster/nats-harness.ts; Debian's nats-server 2.9):
 *
 *   sh scripts/node.sh --import tsx scripts/bench/cluster-backup.ts [--partitions 64] [--records 500] [--tail 100] [--body 100]
 *
 * Fills --partitions partitions through the cluster Storage (cluster/storage.ts), each with --records log records
 * (one awaited commit of one --body byte row each, the partitions in parallel); with --tail below --records, each
 * partition is snapshotted --tail records before its end (so the backup reads a snapshot plus a tail of --tail
 * records, as on a running cluster where a snapshot is taken every 2,000 records), else it has no snapshot and
 * the backup replays every record. Then times backupCluster, and restoreCluster of that backup into the same
 * (now idle) streams, and checks that a partition rebuilt from the restored streams has every row.
 * Prints one JSON line per measurement.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { backupCluster } from '../../cluster/backup.js';
import { connectCluster } from '../../cluster/nats.js';
import { restoreCluster } from '../../cluster/restore.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { NatsCluster } from '../../test/cluster/nats-harness.js';

const { values } = parseArgs({
  options: {
    partitions: { type: 'string', default: '64' },
    records: { type: 'string', default: '500' },
    tail: { type: 'string', default: '100' },
    body: { type: 'string', default: '100' },
  },
});
const PARTITIONS = Number(values.partitions);
const RECORDS = Number(values.records);
const TAIL = Number(values.tail);
const BODY = 'x'.repeat(Number(values.body));

const nats = await NatsCluster.start(3);
const work = mkdtempSync(join(tmpdir(), 'iris-bench-backup-'));
const conn = await connectCluster(nats.urls(), undefined, 'bench-backup');
try {
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: PARTITIONS }, async (_, p) => {
      const s = await ClusterStorage.open(conn, p, work, { node: 'bench' });
      await s.commit(() => void s.sql.all('CREATE TABLE IF NOT EXISTS kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL)'));
      for (let i = 1; i < RECORDS - 1; i++) {
        await s.commit(() => void s.sql.all('INSERT INTO kv (k, v) VALUES (?, ?)', i, BODY));
        if (TAIL < RECORDS && i === RECORDS - 1 - TAIL) await s.snapshot();
      }
      await s.close();
    }),
  );
  console.log(JSON.stringify({ what: 'fill', partitions: PARTITIONS, recordsPerPartition: RECORDS, tail: TAIL < RECORDS ? TAIL : RECORDS, ms: Math.round(performance.now() - t0) }));

  const dir = join(work, 'backup');
  const t1 = performance.now();
  let replayed = 0;
  const info = await backupCluster(conn, PARTITIONS, dir, { onPartition: (_p, _b, n) => void (replayed += n) });
  const backupMs = performance.now() - t1;
  const bytes = info.files.reduce((a, f) => a + f.bytes, 0);
  console.log(JSON.stringify({ what: 'backup', partitions: PARTITIONS, files: info.files.length, bytes, recordsReplayed: replayed, ms: Math.round(backupMs), msPerPartition: Number((backupMs / PARTITIONS).toFixed(1)), msPerRecord: replayed > 0 ? Number((backupMs / replayed).toFixed(3)) : null }));

  const t2 = performance.now();
  const r = await restoreCluster(conn, PARTITIONS, dir);
  const restoreMs = performance.now() - t2;
  console.log(JSON.stringify({ what: 'restore', partitions: PARTITIONS, restored: r.restored.length, ms: Math.round(restoreMs), msPerPartition: Number((restoreMs / PARTITIONS).toFixed(1)) }));

  // A new owner of a restored partition: snapshot + the marker, every row there.
  mkdirSync(join(work, 'check'));
  const s = await ClusterStorage.open(conn, 0, join(work, 'check'), { node: 'check' });
  const n = await s.commit(() => s.sql.all<{ n: number }>('SELECT count(*) AS n FROM kv')[0]!.n);
  await s.close();
  if (n !== RECORDS - 2) throw new Error(`partition 0 after the restore has ${n} rows, expected ${RECORDS - 2}`);
  console.log(JSON.stringify({ what: 'check', partition: 0, rows: n }));
} finally {
  await conn.nc.close();
  nats.stop();
  rmSync(work, { recursive: true, force: true });
}
