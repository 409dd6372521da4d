import { beforeAll } from 'vitest';
import type { ClusterConn } from '../../cluster/nats.js';
import { ClusterStorage } from '../../cluster/storage.js';
import { storageContract, type StorageTarget } from '../contract/storage-suite.js';
import { ClusterFixture } from './fixture.js';

/**
 * The Storage contract (test/contract/storage-suite.ts) against the cluster adapter (cluster/storage.ts) on a
 * real three-server NATS cluster. "Durable" here is "in the partition's log, acked by JetStream (R3)"; a crash
 * is the owner dying: its storage stops appending and answering (kill()), and the next use() is a NEW owner that
 * rebuilds the partition from the log into a new local file. So every case that crashes checks exactly what the
 * log holds, and that a commit resolved only once its record was acked. No setFull: the local file is a view,
 * and a full JetStream store is not simulated here (the full-disk case is then not registered, as the suite says).
 */

const fx = new ClusterFixture();
let conn: ClusterConn;

beforeAll(async () => {
  conn = await fx.conn('contract');
});

function clusterTarget(): StorageTarget {
  const dbs = new Map<string, { storage: ClusterStorage; partition: number; generation: number }>();
  let partitions = 0;

  async function open(partition: number, generation: number): Promise<ClusterStorage> {
    const dir = fx.dir();
    const s = await ClusterStorage.open(conn, partition, dir, { node: `owner${generation}` });
    fx.keep(s);
    return s;
  }

  return {
    async use(name, fn) {
      let db = dbs.get(name);
      if (!db) {
        const partition = 500 + ++partitions;
        db = { storage: await open(partition, 0), partition, generation: 0 };
        dbs.set(name, db);
      }
      return fn(db.storage);
    },
    async crash(name) {
      const db = dbs.get(name);
      if (!db) throw new Error(`crash(${name}) before any use(${name})`);
      db.storage.kill();
      db.generation++;
      db.storage = await open(db.partition, db.generation);
    },
  };
}

storageContract('cluster (partition log on NATS JetStream R3)', clusterTarget());
