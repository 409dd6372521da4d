import type { IncomingMessage, ServerResponse } from 'node:http';
import { adminError, checkAdmin, isAdminAnswer, parseAdminRequest, runAdmin, type AdminAnswer, type AdminCall, type AdminShard } from '../../core/admin.js';
import { CLOSE_CODES } from '../../protocol/index.js';
import type { TokenClaims } from '../../core/ports.js';
import { Revocations } from '../../core/revocation.js';
import { json } from '../http.js';
import { describeError } from '../log.js';
import { owns, workerFor, type WorkerContext } from './context.js';
import type { Shard, Shards } from './shards.js';

/** Erase: how long closed sockets get to finish their close handshake before they are cut, and the core to settle. */
const ERASE_CLOSE_MS = 2_000;
const ERASE_SETTLE_MS = 5_000;

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The admin API on-prem (core/admin.ts has the shared part): any worker may receive the HTTP request (the port is
 * shared); it checks the credential and sends the call to the worker that owns the user, over the same link the
 * router uses (onprem/links.ts op `admin`), where it runs against the user's shard. /admin/v1/stats asks every
 * worker for its counts and adds them up.
 */

/** What a worker reports for /admin/v1/stats. */
interface WorkerStats {
  worker: number;
  connections: number;
  mailboxes: number;
}

type Internal = AdminCall | { op: 'worker_stats' } | { op: 'is_revoked'; user: string; claims: TokenClaims };

/** How this worker reaches another one's admin handler (Router.adminCall). */
export type AdminLink = (worker: number, call: string) => Promise<string>;

export class AdminRoute {
  constructor(
    private readonly ctx: WorkerContext,
    private readonly shards: Shards,
    private readonly link: AdminLink,
  ) {}

  /** An HTTP request to /admin/v1/...: answered here, whatever happens (never a hung response). */
  handle(req: IncomingMessage, res: ServerResponse): void {
    this.answer(req).then(
      (a) => json(res, a.status, a.body),
      (e: unknown) => {
        this.ctx.log('warn', `admin request failed: ${describeError(e)}`);
        const a = adminError('unavailable', 'the shard of this user could not be reached; retry');
        json(res, a.status, a.body);
      },
    );
  }

  private async answer(req: IncomingMessage): Promise<AdminAnswer> {
    const denied = await checkAdmin(this.ctx.cfg.adminSecret, req.headers.authorization);
    if (denied) return denied;
    const call = parseAdminRequest(req.method ?? '', new URL(req.url ?? '/', 'http://iris.invalid'), Math.floor(Date.now() / 1000));
    if (isAdminAnswer(call)) return call;
    if (call.op === 'stats') return this.stats();
    return this.run(workerFor(this.ctx, call.user), call);
  }

  /** Cluster mode: an admin call for a user of another node's partition (onprem/cluster/peers.ts, over NATS). */
  remote: ((user: string, call: string) => Promise<string>) | null = null;

  private async run(worker: number, call: Internal): Promise<AdminAnswer> {
    if (this.remote && 'user' in call && !owns(this.ctx, call.user)) return JSON.parse(await this.remote(call.user, JSON.stringify(call))) as AdminAnswer;
    if (worker === this.ctx.id) return this.local(call);
    return JSON.parse(await this.link(worker, JSON.stringify(call))) as AdminAnswer;
  }

  /** Process-wide: every worker's counts, summed (a worker that does not answer is listed as missing). */
  private async stats(): Promise<AdminAnswer> {
    const per = await Promise.all(
      Array.from({ length: this.ctx.workers }, (_, w) => this.run(w, { op: 'worker_stats' }).then((a) => a.body as unknown as WorkerStats, () => null)),
    );
    const up = per.filter((w): w is WorkerStats => w !== null);
    return {
      status: 200,
      body: {
        profile: 'onprem',
        workers: this.ctx.workers,
        workersAnswering: up.length,
        connections: up.reduce((n, w) => n + w.connections, 0),
        mailboxes: up.reduce((n, w) => n + w.mailboxes, 0),
        perWorker: up,
      },
    };
  }

  /** Whether a token is revoked, asked of the user's owner (the listener's answer to a plain GET: auth/upgrade.ts identityOf). */
  async isRevoked(user: string, claims: TokenClaims): Promise<boolean> {
    const a = await this.run(workerFor(this.ctx, user), { op: 'is_revoked', user, claims });
    return a.body['revoked'] === true;
  }

  /** A call for this worker (from its own listener, or from another worker's over the link). */
  async local(call: Internal): Promise<AdminAnswer> {
    if (this.ctx.draining) return adminError('unavailable', 'server is shutting down');
    if (call.op === 'worker_stats') {
      return { status: 200, body: { worker: this.ctx.id, connections: this.shards.connCount, mailboxes: [...this.shards.all()].length } };
    }
    if (!owns(this.ctx, call.user)) return adminError('internal', 'admin call routed to the wrong worker');
    // Read only, and no shard loaded for it.
    if (call.op === 'is_revoked') return { status: 200, body: { revoked: new Revocations(this.shards.storage(call.user).sql, call.user).isRevoked(call.claims) } };
    const shard = this.shards.get(call.user);
    const port: AdminShard = {
      storage: this.shards.storage(call.user),
      conns: () => shard.conns,
      now: () => Date.now(),
      disconnectAll: () => this.disconnectAll(shard),
      forget: () => this.shards.forget(call.user),
    };
    // Not counted as busy: the erase waits for the shard's own work to finish, which that count would include.
    if (call.op === 'erase') return runAdmin(call, port);
    return this.shards.track(shard, runAdmin(call, port));
  }

  /** Closes the user's sockets (4007), cuts those that did not finish closing in time, waits for the core to settle. */
  private async disconnectAll(shard: Shard): Promise<void> {
    for (const c of shard.conns) c.close(CLOSE_CODES.disconnected_by_admin, 'account erased');
    for (const end = Date.now() + ERASE_CLOSE_MS; shard.conns.length > 0 && Date.now() < end; ) await tick(20);
    for (const c of shard.conns) c.ws.terminate();
    for (const end = Date.now() + ERASE_SETTLE_MS; (shard.conns.length > 0 || shard.busy > 0) && Date.now() < end; ) await tick(10);
  }

  /** The link handler (Router): JSON in, JSON out. */
  fromLink(call: string): Promise<string> {
    return this.local(JSON.parse(call) as Internal).then((a) => JSON.stringify(a));
  }
}
