import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { WorkerContext } from '../../onprem/worker/context.js';
import { PipeRoute, type PipeMeta } from '../../onprem/worker/pipe.js';
import { NodeRelay } from '../../onprem/worker/relay.js';
import type { WebSockets } from '../../onprem/worker/websockets.js';
import { freePort } from '../../scripts/lib/net.js';

/**
 * The accepting node's side of a cluster relay (onprem/worker/relay.ts), shared by WebSocket upgrades and v1
 * connections: it waits (bounded) for an owner, relays to it, looks again when the owner named by a lease is
 * dead, and answers `refuse` (never a hang) when no owner takes the connection before the deadline.
 */

const LEASE_MS = 100; // the relay waits up to 2 leases
const META: PipeMeta = { user: 'alice', v1: { transport: 'tcp', packets: '', raw: '', trace: 't' } };

const closers: (() => void)[] = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

function context(owns: () => boolean): WorkerContext {
  return { id: 0, workers: 1, cfg: { cluster: { leaseMs: LEASE_MS }, runDir: '/nonexistent' }, clusterOwns: owns, draining: false } as unknown as WorkerContext;
}

/** A listening server on a free loopback port, closed after the test; `accepted` resolves with its first socket. */
async function server(): Promise<{ port: number; accepted: Promise<Socket>; srv: Server }> {
  let got!: (s: Socket) => void;
  const accepted = new Promise<Socket>((r) => (got = r));
  const srv = createServer((s) => got(s));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  closers.push(() => srv.close());
  return { port: (srv.address() as { port: number }).port, accepted, srv };
}

/** The server side of a loopback connection: the socket a node accepted from a client. */
async function accepted(): Promise<{ socket: Socket; client: Socket }> {
  const s = await server();
  const client = connect(s.port, '127.0.0.1');
  client.on('error', () => undefined);
  const socket = await s.accepted;
  closers.push(() => (client.destroy(), socket.destroy()));
  return { socket, client };
}

type Outcome = 'local' | 'refuse' | 'leave';

function relay(owns: () => boolean, lookup: () => Promise<{ host: string; port: number } | null>, socket: Socket, head = Buffer.alloc(0)): Promise<Outcome> {
  const ctx = context(owns);
  const r = new NodeRelay(ctx, new PipeRoute(ctx, {} as WebSockets), { ownerAddress: lookup });
  return new Promise<Outcome>((resolve) => {
    void r.relay(socket, head, META, { local: () => resolve('local'), refuse: () => resolve('refuse'), leave: () => resolve('leave') });
  });
}

describe('NodeRelay: the accepting side of a cluster relay', () => {
  it('refuses when no node owns the partition before the deadline (a failover), after waiting for one', async () => {
    const { socket } = await accepted();
    const t0 = Date.now();
    expect(await relay(() => false, () => Promise.resolve(null), socket)).toBe('refuse');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2 * LEASE_MS);
  });

  it('serves it here when the partition comes to this node while it waits', async () => {
    const { socket } = await accepted();
    let lookups = 0;
    expect(await relay(() => lookups >= 2, () => (lookups++, Promise.resolve(null)), socket)).toBe('local');
  });

  it('looks again while the owner named by the lease is dead, then refuses at the deadline', async () => {
    const { socket } = await accepted();
    const dead = await freePort();
    let lookups = 0;
    expect(await relay(() => false, () => (lookups++, Promise.resolve({ host: '127.0.0.1', port: dead })), socket)).toBe('refuse');
    expect(lookups).toBeGreaterThan(1);
  });

  it('relays to a live owner: the header, then the bytes already read, then the client bytes as they come', async () => {
    const { socket, client } = await accepted();
    const owner = await server();
    const outcome = relay(() => false, () => Promise.resolve({ host: '127.0.0.1', port: owner.port }), socket, Buffer.from('early'));
    expect(await outcome).toBe('leave');
    const at = await owner.accepted;
    let got = Buffer.alloc(0);
    client.write('later');
    await new Promise<void>((resolve) => {
      at.on('data', (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.toString('latin1').endsWith('earlylater')) resolve();
      });
    });
    const n = got.readUInt32LE(0);
    expect(JSON.parse(got.subarray(4, 4 + n).toString('utf8'))).toEqual(META);
    expect(got.subarray(4 + n).toString('latin1')).toBe('earlylater');
    at.destroy();
  });
});
