import { spawn } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { BACKUP_FILE, logHead, partitionFile, type BackupInfo } from '../../cluster/backup.js';
import { connectCluster, type ClusterConn } from '../../cluster/nats.js';
import { restoreCluster } from '../../cluster/restore.js';
import { freePort, removeDir, ROOT, tempDir, waitFor } from '../onprem/helpers.js';
import { NatsCluster } from './nats-harness.js';
import { connectRetrying, launchNode, type NodeProc, userOn as userOnShared, waitSettled } from './nodes.js';

/**
 * Backup and restore of a running cluster (issue 13; cluster/backup.ts, cluster/restore.ts, the CLI
 * onprem/cluster/backup.ts): three nats-server processes and three Iris nodes, started and stopped here by pid.
 * The backup is taken by the CLI while clients send; its files are read with plain SQL. The restore goes into a
 * second, fresh NATS cluster, and nodes started on it serve the offline messages from before the backup.
 */

const PARTITIONS = 8;
const LEASE_MS = 2000;
const IDS = ['node0', 'node1', 'node2'];

type Node = NodeProc;

const userOn = (node: string, prefix: string): string => userOnShared(node, IDS, prefix, PARTITIONS);

/** Runs the backup CLI from dist/ (built by the project's global setup) to its exit. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res) => {
    const child = spawn('sh', [join(ROOT, 'scripts/node.sh'), join(ROOT, 'dist/onprem/cluster/backup.js'), ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('exit', (code) => res({ code, stdout, stderr }));
  });
}

/** Every row of `table` in every partition file of the backup. */
function rowsOf(dir: string, info: BackupInfo, table: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const f of info.files) {
    const db = new DatabaseSync(join(dir, partitionFile(f.partition)), { readOnly: true });
    try {
      out.push(...(db.prepare(`SELECT * FROM ${table}`).all() as Record<string, unknown>[]));
    } finally {
      db.close();
    }
  }
  return out;
}

/** Records per log subject and each partition's snapshot manifest sequence: what a restore would change. */
async function streamState(conn: ClusterConn): Promise<{ subjects: Record<string, number>; manifests: Record<string, number> }> {
  const log = await conn.jsm.streams.info(conn.setup.names.logStream, { subjects_filter: '>' });
  const snap = await conn.jsm.streams.info(conn.setup.names.snapStream, { subjects_filter: '>' });
  const manifests = Object.fromEntries(Object.entries(snap.state.subjects ?? {}).filter(([s]) => s.endsWith('.m')));
  return { subjects: log.state.subjects ?? {}, manifests };
}

describe('cluster backup and restore: 3 NATS servers + 3 Iris nodes', () => {
  let nats: NatsCluster;
  let fresh: NatsCluster | null = null;
  const nodes: Node[] = [];
  const clients: IrisClient[] = [];
  const dirs: string[] = [];
  let probe: ClusterConn;
  const alice = userOn('node0', 'alice-');
  const bob = userOn('node1', 'bob-');
  const carol = userOn('node2', 'carol-');
  const dave = userOn('node0', 'dave-');
  /** alice's messages to bob, in the order sent (each awaited): texts, and server ids of those acked before the backup. */
  const toBob: string[] = [];
  const ackedBefore = new Set<string>();
  let backupDir = '';
  let info: BackupInfo;

  /**
   * bob's messages in the backup: in his inbox, or still in alice's outbox (forwarded once nodes run again), or
   * both (appended to his inbox at or before the cut, deleted from her outbox after it: forwarded again and
   * dropped by his dedup on her outbox number), so counted by message id.
   */
  function bobsInBackup(): number {
    const inbox = rowsOf(backupDir, info, 'inbox').filter((r) => r['user'] === bob);
    const outbox = rowsOf(backupDir, info, 'outbox').filter((r) => r['recipient'] === bob);
    return new Set([...inbox, ...outbox].map((r) => String(r['msg']))).size;
  }

  const launch = (n: Node, urls: string[]): Promise<void> => launchNode(n, { nats: urls, partitions: PARTITIONS, leaseMs: LEASE_MS });

  const settled = (conn: ClusterConn): Promise<void> => waitSettled(conn, IDS, PARTITIONS);

  const connect = (url: string, user: string, inbox?: IrisMessage[]): Promise<IrisClient> => connectRetrying(clients, url, user, inbox);

  beforeAll(async () => {
    nats = await NatsCluster.start(3);
    for (const id of IDS) {
      const port = await freePort();
      nodes.push({ id, port, pipePort: await freePort(), dataDir: tempDir('iris-backup-node-'), server: null, url: `ws://127.0.0.1:${port}/v1/connect` });
    }
    await Promise.all(nodes.map((n) => launch(n, nats.urls())));
    probe = await connectCluster(nats.urls());
    await settled(probe);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    await probe?.nc.close().catch(() => undefined);
    for (const n of nodes) {
      n.server?.kill();
      removeDir(n.dataDir);
    }
    nats?.stop();
    fresh?.stop();
    for (const d of dirs) removeDir(d);
  });

  it('a backup taken while clients send holds every message acked before it, in a consistent cut', async () => {
    const a = await connect(nodes[2]!.url, alice);
    const c = await connect(nodes[0]!.url, carol);
    await connect(nodes[1]!.url, dave, []);
    // bob stays offline: alice's messages wait in his inbox (or still in her outbox).
    for (let i = 0; i < 20; i++) {
      const text = `a-${i}`;
      const ack = await a.send(bob, text);
      toBob.push(text);
      ackedBefore.add(ack.msg);
    }
    let sending = true;
    const load = async (from: IrisClient, to: string, tag: string, sent?: string[]) => {
      for (let i = 0; sending; i++) {
        await from.send(to, `${tag}-${i}`);
        sent?.push(`${tag}-${i}`);
      }
    };
    const loops = [load(a, bob, 'b', toBob), load(c, dave, 'c')];
    backupDir = join(tempDir('iris-backup-'), 'b1');
    dirs.push(join(backupDir, '..'));
    const r = await cli(['--nats', nats.urls().join(','), '--partitions', String(PARTITIONS), '--to', backupDir]);
    sending = false;
    await Promise.all(loops);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^backup: \d+ partition file\(s\), .* cut at log seq \d+/);
    info = JSON.parse(readFileSync(join(backupDir, BACKUP_FILE), 'utf8')) as BackupInfo;
    expect(info.partitions).toBe(PARTITIONS);
    expect(info.files.length + info.empty.length).toBe(PARTITIONS);

    // Every message acked before the backup started is in it: in bob's inbox, or still in alice's outbox.
    const inbox = rowsOf(backupDir, info, 'inbox');
    const outbox = rowsOf(backupDir, info, 'outbox');
    const held = new Set([...inbox, ...outbox].map((r) => String(r['msg'])));
    for (const msg of ackedBefore) expect(held).toContain(msg);

    // Consistent: every accepted send (a dedup row names its recipient and outbox number) is still in the
    // sender's outbox, or in the recipient's inbox, or below the recipient's trim floor for that sender.
    const inInbox = new Set(inbox.map((r) => `${r['user']}|${r['peer']}|${r['n']}`));
    const inOutbox = new Set(outbox.map((r) => `${r['user']}|${r['recipient']}|${r['n']}`));
    const floor = new Map(rowsOf(backupDir, info, 'peers').map((r) => [`${r['user']}|${r['peer']}`, Number(r['last_n'])]));
    const accepted = rowsOf(backupDir, info, 'dedup').filter((r) => r['peer'] !== '');
    expect(accepted.length).toBeGreaterThanOrEqual(20);
    const lost = accepted.filter((d) => {
      const [s, to, n] = [d['user'], d['peer'], Number(d['n'])];
      return !inOutbox.has(`${s}|${to}|${n}`) && !inInbox.has(`${to}|${s}|${n}`) && (floor.get(`${to}|${s}`) ?? 0) < n;
    });
    expect(lost).toEqual([]);
  }, 120_000);

  it('a restore is refused while a node runs, and a corrupted file is refused before anything is written', async () => {
    const before = await streamState(probe);
    // Nodes running: the CLI watches the lease bucket, sees heartbeats change, and refuses.
    const r = await cli(['--nats', nats.urls().join(','), '--partitions', String(PARTITIONS), '--restore', backupDir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^backup: Iris nodes are running .*stop every node before restoring; nothing was restored\n$/);
    // A backup of another partition count: refused as such.
    await expect(restoreCluster(probe, PARTITIONS * 2, backupDir)).rejects.toThrow(/has 8 partitions, the cluster is configured with 16/);

    // One flipped byte in one file: refused on its sha256, before the lease bucket is even looked at.
    const bad = join(backupDir, '..', 'corrupt');
    cpSync(backupDir, bad, { recursive: true });
    const victim = join(bad, partitionFile(info.files[0]!.partition));
    const bytes = readFileSync(victim);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 0xff, bytes.length - 100);
    writeFileSync(victim, bytes);
    await expect(restoreCluster(probe, PARTITIONS, bad, { watchMs: 1 })).rejects.toThrow(/does not match the backup's sha256/);

    // Neither changed anything: no subject lost a record (a restore purges them), no snapshot was replaced.
    const after = await streamState(probe);
    for (const [s, n] of Object.entries(before.subjects)) expect(after.subjects[s] ?? 0).toBeGreaterThanOrEqual(n);
    expect(after.manifests).toEqual(before.manifests);
  }, 60_000);

  it('restored into a fresh NATS cluster, nodes serve the offline messages from before the backup, once, in order', async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    for (const n of nodes) {
      await n.server!.stop();
      n.server = null;
    }
    fresh = await NatsCluster.start(3);
    const urls = fresh.urls();
    const t0 = performance.now();
    const r = await cli(['--nats', urls.join(','), '--partitions', String(PARTITIONS), '--restore', backupDir]);
    console.log(`cluster restore of ${info.files.length} partition files: ${Math.round(performance.now() - t0)} ms (CLI, incl. connect); ${r.stdout.trim()}`);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`restore: ${info.files.length} partition\\(s\\) restored, ${info.empty.length} emptied`));
    const conn = await connectCluster(urls);
    try {
      // Each restored partition: one record (the marker), which its snapshot's logSeq names.
      expect(await logHead(conn)).toBe(info.files.length);
    } finally {
      await conn.nc.close();
    }

    for (const n of nodes) n.dataDir = tempDir('iris-backup-node-'); // nothing local survives: all from the streams
    await Promise.all(nodes.map((n) => launch(n, urls)));
    const forBob = bobsInBackup();
    expect(forBob).toBeGreaterThanOrEqual(ackedBefore.size);
    const atBob: IrisMessage[] = [];
    await connect(nodes[2]!.url, bob, atBob);
    await waitFor('bob gets his offline messages', () => atBob.length >= forBob, 30_000);
    // A new message after them: bob's inbox is one ordered stream, so once it arrives nothing of the backup can
    // still come twice.
    const x = await connect(nodes[1]!.url, carol);
    await x.send(bob, 'after the restore');
    await waitFor('bob gets a new message on the restored cluster', () => atBob.some((m) => m.text() === 'after the restore'), 30_000);
    // Exactly what the backup held, once each, in the order alice sent them: a prefix of what she sent (all
    // acked before the backup, and some of those sent during it), then the new one.
    expect(atBob.map((m) => m.text())).toEqual([...toBob.slice(0, forBob), 'after the restore']);
    expect(atBob.slice(0, forBob).every((m) => m.from === alice)).toBe(true);
  }, 120_000);

  it('restored again into the same streams after every node was killed: stale keys cleared, the state is the cut again', async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    // kill -9: heartbeats and leases stay in the bucket, unchanged; the restore watches them for a lease.
    for (const n of nodes) {
      n.server!.kill();
      n.server = null;
    }
    const urls = fresh!.urls();
    const conn = await connectCluster(urls);
    try {
      const r = await restoreCluster(conn, PARTITIONS, backupDir);
      expect(r.staleKeys.filter((k) => k.startsWith('n.')).sort()).toEqual(IDS.map((id) => `n.${id}`));
      expect(r.restored.length).toBe(info.files.length);
    } finally {
      await conn.nc.close();
    }
    await Promise.all(nodes.map((n) => launch(n, urls)));
    const forBob = bobsInBackup();
    const atBob: IrisMessage[] = [];
    await connect(nodes[0]!.url, bob, atBob);
    await waitFor('bob gets his offline messages again', () => atBob.length >= forBob, 30_000);
    const x = await connect(nodes[2]!.url, carol);
    await x.send(bob, 'after the second restore');
    await waitFor('bob gets a new message', () => atBob.some((m) => m.text() === 'after the second restore'), 30_000);
    // What was sent after the first restore is gone with everything else after the cut.
    expect(atBob.map((m) => m.text())).toEqual([...toBob.slice(0, forBob), 'after the second restore']);
  }, 120_000);
});
