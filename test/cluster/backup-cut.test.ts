import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { describe, expect, it } from 'vitest';
import { backupCluster, partitionFile, type BackupInfo } from '../../cluster/backup.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { waitFor } from '../onprem/helpers.js';
import { CREATE, ClusterFixture, put } from './fixture.js';

/**
 * The backup's cut (cluster/backup.ts) at the storage level, on a real three-server NATS cluster: owners keep
 * committing AND snapshotting (which purges the log below each snapshot) while the backup reads, so the race
 * with a concurrent snapshot is exercised, not only the quiet case.
 */

const fx = new ClusterFixture();
const P = 4;

describe('cluster backup: the cut while owners write and snapshot', () => {
  it('every partition is a gap-free prefix holding every commit acked before the backup; untouched partitions are listed empty', async () => {
    const w = await fx.conn('writer');
    const stores: ClusterStorage[] = [];
    for (let p = 0; p < P; p++) stores.push(fx.keep(await ClusterStorage.open(w, p, fx.dir(), { node: 'w', snapshotEvery: 10 })));
    for (const s of stores) await s.commit(() => void s.sql.all(CREATE));
    let writing = true;
    const acked = new Array<number>(P).fill(0);
    // Partition 1's writer can be held at a gate, so that the test can snapshot it with no write in flight.
    const gate = { closed: false, waiting: false, open: () => undefined as void };
    const loops = stores.map(async (s, p) => {
      for (let i = 1; writing; i++) {
        if (p === 1 && gate.closed) {
          await new Promise<void>((r) => {
            gate.waiting = true;
            gate.open = r;
          });
          gate.waiting = false;
        }
        await put(s, i, `v${i}`);
        acked[p] = i;
      }
    });
    let info: BackupInfo | undefined;
    let before: number[] = [];
    const dir = join(fx.dir(), 'backup');
    try {
      await waitFor('some commits in every partition', () => acked.every((n) => n >= 30), 30_000);
      before = [...acked];
      // After partition 0, partition 1's owner snapshots past the cut, while every owner keeps snapshotting every
      // 10 records: with purges held, partition 1 is still read at the cut from its older snapshot and records, not
      // written with a hole. Two partitions more than were ever written have no snapshot and no record.
      let raced = false;
      info = await backupCluster(await fx.conn('backup'), P + 2, dir, {
        onPartition: async (p, _bytes, _records, cut) => {
          if (p !== 0 || raced) return;
          raced = true;
          gate.closed = true;
          await waitFor('partition 1 idle', () => gate.waiting);
          const next = acked[1]! + 1;
          await put(stores[1]!, next, `v${next}`); // a record past the cut; the writer writes it again
          const m = await stores[1]!.snapshot();
          expect(m.logSeq).toBeGreaterThan(cut);
          gate.closed = false;
          gate.open();
        },
      });
    } finally {
      writing = false;
      gate.closed = false;
      gate.open();
      await Promise.all(loops);
    }
    if (!info) throw new Error('no backup');
    // One cut: the snapshot past it purged nothing the cut needed, since the backup held purges.
    expect(info.cuts).toBe(1);
    expect(info.empty).toEqual([P, P + 1]);
    for (const p of [P, P + 1]) expect(existsSync(join(dir, partitionFile(p)))).toBe(false);
    for (let p = 0; p < P; p++) {
      const db = new DatabaseSync(join(dir, partitionFile(p)), { readOnly: true });
      const ks = (db.prepare('SELECT k FROM kv ORDER BY k').all() as { k: number }[]).map((r) => r.k);
      db.close();
      // Commits of one partition are appended in order: a cut holds 1..m, never a gap.
      expect(ks).toEqual(Array.from({ length: ks.length }, (_, i) => i + 1));
      expect(ks.length).toBeGreaterThanOrEqual(before[p]!);
    }
  }, 90_000);
});
