import { IncomingMessage } from 'node:http';
import { createConnection, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { authorizeUpgrade, isRefusal, type TokenVerifier } from '../../auth/index.js';
import { TOKEN_HEADER, claimsHeader } from '../../core/revocation.js';
import type { UpgradeHead } from '../ipc.js';
import { owns, refuse, type WorkerContext } from './context.js';
import { destroyOnError, type WebSockets } from './websockets.js';

/**
 * The pipe route (TLS, or IRIS_ROUTE=pipe): the accepting worker relays bytes to the owner over a unix socket
 * (<run dir>/pipe-<i>.sock) instead of handing the socket over. The connection starts with one length-prefixed
 * JSON header ({ user, head }), then the client's bytes as they came.
 */
export class PipeRoute {
  private server: NetServer | null = null;
  private tcp: NetServer | null = null;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly sockets: WebSockets,
  ) {}

  /** The accepting side: relay this authenticated upgrade to `owner`. */
  pipeTo(owner: number | { host: string; port: number }, socket: Socket, head: Buffer, user: string, uh: UpgradeHead): void {
    // A number: another worker of this box (unix socket). An address: the owning node of a cluster (TCP).
    const uds = typeof owner === 'number' ? createConnection(join(this.ctx.cfg.runDir, `pipe-${owner}.sock`)) : createConnection(owner.port, owner.host);
    const meta = Buffer.from(JSON.stringify({ user, head: uh }));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(meta.length, 0);
    uds.write(Buffer.concat([len, meta, head]));
    let opened = false;
    uds.once('connect', () => {
      opened = true;
      socket.pipe(uds);
      uds.pipe(socket);
    });
    uds.on('error', () => {
      if (!opened) refuse(this.ctx, socket, { status: 503, code: 'unavailable', message: 'could not reach the shard of this user; retry', headers: { 'retry-after': '1' } });
      uds.destroy();
    });
    uds.on('close', () => {
      if (opened) socket.destroy();
    });
    socket.on('close', () => uds.destroy());
  }

  /** The owning side: accept relayed connections for this worker's users. */
  listen(): Promise<void> {
    const path = join(this.ctx.cfg.runDir, `pipe-${this.ctx.id}.sock`);
    rmSync(path, { force: true }); // left over from a worker that died
    const server = createNetServer((s) => this.accept(s));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`cannot listen on ${path}: ${e.message}`, { cause: e })));
      server.listen(path, () => resolve());
    });
  }

  /**
   * Cluster mode: the same relay between NODES, on a TCP port (onprem/cluster/config.ts pipeHost/pipePort). Unlike
   * the unix socket (reachable by this box's workers only), a TCP port can be reached by anyone on its network, so
   * the relaying node sends the client's own upgrade request, token included, and this node verifies it again with
   * `verifier` (the same keys every node has): a header naming a user is never trusted on its own. Keep the port on
   * the nodes' private network all the same.
   */
  listenTcp(host: string, port: number, verifier: TokenVerifier): Promise<void> {
    const server = createNetServer((s) => this.accept(s, verifier));
    this.tcp = server;
    return new Promise((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`cannot listen on ${host}:${port} (cluster pipe): ${e.message}`, { cause: e })));
      server.listen({ host, port }, () => resolve());
    });
  }

  close(): void {
    this.server?.close();
    this.tcp?.close();
  }

  /** `verifier`: a relay from another node (TCP), whose token is verified here again. */
  private accept(s: Socket, verifier?: TokenVerifier): void {
    let buf = Buffer.alloc(0);
    s.on('error', destroyOnError);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return;
      const n = buf.readUInt32LE(0);
      if (n > 1024 * 1024) return s.destroy();
      if (buf.length < 4 + n) return;
      s.off('data', onData);
      s.pause();
      let meta: { user: string; head: UpgradeHead };
      try {
        meta = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as { user: string; head: UpgradeHead };
      } catch {
        return s.destroy();
      }
      if (this.ctx.draining) return refuse(this.ctx, s, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
      const rest = buf.subarray(4 + n);
      if (!verifier) return this.admit(s, meta, rest, Date.now() + (this.ctx.clusterOwns ? 3000 : 0));
      void this.verified(s, meta, verifier).then(
        (ok) => {
          if (ok) this.admit(s, meta, rest, Date.now() + 3000);
        },
        () => s.destroy(),
      );
    };
    s.on('data', onData);
  }

  /**
   * A relay from another node: its request must carry a token that verifies here for the user it names (no
   * connect limit: the accepting node applied it to the client's address). The claims the shard checks against
   * revocations are this node's reading of the token, set over whatever the relay sent.
   */
  private async verified(s: Socket, meta: { user: string; head: UpgradeHead }, verifier: TokenVerifier): Promise<boolean> {
    const h = meta.head.headers;
    const header = (name: string): string | undefined => {
      const v = h[name];
      return Array.isArray(v) ? v.join(', ') : v;
    };
    const url = new URL(meta.head.url, 'http://iris.invalid');
    const verdict = await authorizeUpgrade({ method: meta.head.method, url, header, ip: meta.head.remote }, { verifier });
    if (s.destroyed) return false;
    if (isRefusal(verdict)) {
      refuse(this.ctx, s, verdict);
      return false;
    }
    if (verdict.user !== meta.user) {
      refuse(this.ctx, s, { status: 403, code: 'user_mismatch', message: 'relayed connection names another user than its token' });
      return false;
    }
    h[TOKEN_HEADER] = claimsHeader(verdict);
    return true;
  }

  /**
   * Takes a relayed socket whose header was read. In a cluster the relaying node may have read this node's lease
   * while the partition is still being rebuilt here: then it waits (until `until`) before refusing.
   */
  private admit(s: Socket, meta: { user: string; head: UpgradeHead }, rest: Buffer, until: number): void {
    if (!owns(this.ctx, meta.user) && Date.now() < until && !s.destroyed && !this.ctx.draining) {
      setTimeout(() => this.admit(s, meta, rest, until), 50);
      return;
    }
    if (s.destroyed) return;
    if (this.ctx.draining) return refuse(this.ctx, s, { status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    if (!owns(this.ctx, meta.user)) {
      // In a cluster the partition may have moved since the relaying node looked: retryable.
      if (this.ctx.clusterOwns) return refuse(this.ctx, s, { status: 503, code: 'unavailable', message: 'the shard of this user moved; retry', headers: { 'retry-after': '1' } });
      return refuse(this.ctx, s, { status: 500, code: 'internal', message: 'connection routed to the wrong worker' });
    }
    const req = new IncomingMessage(s);
    req.method = meta.head.method;
    req.url = meta.head.url;
    req.headers = meta.head.headers;
    this.sockets.accept(req, s, rest, meta.user, 'pipe');
    // The handshake completed synchronously and ws listens for data now: let it flow again.
    if (!s.destroyed) s.resume();
  }
}
