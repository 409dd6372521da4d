import { IncomingMessage } from 'node:http';
import { createConnection, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { authorizeUpgrade, isRefusal, type TokenVerifier } from '../../auth/index.js';
import { TOKEN_HEADER, claimsHeader } from '../../core/revocation.js';
import type { Refusal } from '../http.js';
import type { UpgradeHead, V1Handoff } from '../ipc.js';
import { owns, refuse, type WorkerContext } from './context.js';
import { destroyOnError, type WebSockets } from './websockets.js';

/**
 * A v1 connection relayed to the node serving its user (cluster mode): the LOGIN as read (its token, verified
 * again by the owner, never its claims) and the bytes read after it, as in a hand-off between workers.
 */
export type V1Relay = Omit<V1Handoff, 'user' | 'claims'> & { token?: string };

/** Longest wait for a TCP connect to another node's pipe port (a few ms on a private network). */
const CONNECT_TIMEOUT_MS = 2000;

/** The header of a relayed connection: a WebSocket upgrade (`head`) or a logged-in v1 connection (`v1`). */
export type PipeMeta = { user: string; head: UpgradeHead } | { user: string; v1: V1Relay };

/** What a kind of relayed connection does at the owner: verify it, refuse it in its own protocol, serve it. */
interface Admission {
  verify(): Promise<boolean>;
  refuse(r: Refusal): void;
  serve(rest: Buffer): void;
}

/** The owner's side of relayed v1 connections (gateway/v1/gateway.ts V1Gateway), set when a v1 port is on. */
export interface V1Relayed {
  /** Verifies the relayed LOGIN with this node's own v1 verifier (refusing it with 0xFE on failure). */
  verify(s: Socket, user: string, r: V1Relay): Promise<string | null>;
  refuse(s: Socket, r: V1Relay, code: string): void;
  serve(s: Socket, user: string, r: V1Relay, claims: string, rest: Buffer): void;
}

/**
 * The pipe route (TLS, or IRIS_ROUTE=pipe): the accepting worker relays bytes to the owner over a unix socket
 * (<run dir>/pipe-<i>.sock) instead of handing the socket over. The connection starts with one length-prefixed
 * JSON header (PipeMeta), then the client's bytes as they came. In cluster mode v1 connections take it too.
 */
export class PipeRoute {
  private server: NetServer | null = null;
  private tcp: NetServer | null = null;
  /** Relayed v1 connections go here (null: no v1 port, they are closed). */
  v1: V1Relayed | null = null;

  constructor(
    private readonly ctx: WorkerContext,
    private readonly sockets: WebSockets,
  ) {}

  /**
   * The accepting side: relay this authenticated connection to `owner`. `unreachable` answers the client in its
   * own protocol when the owner cannot be reached (an HTTP 503 by default, for an upgrade); `connected` runs once
   * it is, just before the socket's bytes start to flow there.
   */
  pipeTo(owner: number | { host: string; port: number }, socket: Socket, head: Buffer, m: PipeMeta, how: { unreachable?(): void; connected?(): void } = {}): void {
    // A number: another worker of this box (unix socket). An address: the owning node of a cluster (TCP).
    const uds = typeof owner === 'number' ? createConnection(join(this.ctx.cfg.runDir, `pipe-${owner}.sock`)) : createConnection(owner.port, owner.host);
    const meta = Buffer.from(JSON.stringify(m));
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32LE(meta.length, 0);
    uds.write(Buffer.concat([len, meta, head]));
    let opened = false;
    // A node cut off from this one would leave the connect waiting for the kernel's SYN retries (minutes): a
    // bounded wait, and the caller's `unreachable` (retry, then refuse) decides.
    const connectTimer = typeof owner === 'number' ? null : setTimeout(() => uds.destroy(new Error('cluster pipe: connect timed out')), CONNECT_TIMEOUT_MS);
    uds.once('connect', () => {
      if (connectTimer) clearTimeout(connectTimer);
      opened = true;
      how.connected?.();
      socket.pipe(uds);
      uds.pipe(socket);
    });
    uds.on('error', () => {
      if (connectTimer) clearTimeout(connectTimer);
      if (!opened) {
        if (how.unreachable) how.unreachable();
        else refuse(this.ctx, socket, { status: 503, code: 'unavailable', message: 'could not reach the shard of this user; retry', headers: { 'retry-after': '1' } });
      }
      uds.destroy();
    });
    uds.on('close', () => {
      if (connectTimer) clearTimeout(connectTimer);
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
      let meta: PipeMeta;
      try {
        meta = JSON.parse(buf.subarray(4, 4 + n).toString('utf8')) as PipeMeta;
      } catch {
        return s.destroy();
      }
      const a = this.admission(s, meta, verifier);
      if (!a) return s.destroy();
      if (this.ctx.draining) return a.refuse({ status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
      const rest = buf.subarray(4 + n);
      // Over the unix socket (this box's workers) the accepting worker verified an upgrade; over TCP it is verified
      // here. A v1 relay is always verified here (only nodes send one; its claims are this node's reading).
      if (!verifier && !('v1' in meta)) return this.admit(s, meta.user, a, rest, Date.now() + (this.ctx.clusterOwns ? 3000 : 0));
      void a.verify().then(
        (ok) => {
          if (ok) this.admit(s, meta.user, a, rest, Date.now() + 3000);
        },
        () => s.destroy(),
      );
    };
    s.on('data', onData);
  }

  /** How a relayed connection of this kind is verified, refused and served; null for a malformed header. */
  private admission(s: Socket, meta: PipeMeta, verifier?: TokenVerifier): Admission | null {
    if (typeof meta !== 'object' || meta === null || typeof meta.user !== 'string') return null;
    if ('v1' in meta) {
      const v1 = this.v1;
      const r = meta.v1;
      if (!v1 || typeof r !== 'object' || r === null || (r.transport !== 'tcp' && r.transport !== 'ws')) return null;
      let claims = '';
      return {
        verify: async () => {
          const c = await v1.verify(s, meta.user, r);
          if (c !== null) claims = c;
          return c !== null;
        },
        refuse: (why) => v1.refuse(s, r, why.code),
        serve: (rest) => v1.serve(s, meta.user, r, claims, rest),
      };
    }
    if (typeof meta.head !== 'object' || meta.head === null) return null;
    return {
      verify: () => this.verified(s, meta, verifier!),
      refuse: (why) => refuse(this.ctx, s, why),
      serve: (rest) => {
        const req = new IncomingMessage(s);
        req.method = meta.head.method;
        req.url = meta.head.url;
        req.headers = meta.head.headers;
        this.sockets.accept(req, s, rest, meta.user, 'pipe');
        // The handshake completed synchronously and ws listens for data now: let it flow again.
        if (!s.destroyed) s.resume();
      },
    };
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
  private admit(s: Socket, user: string, a: Admission, rest: Buffer, until: number): void {
    if (!owns(this.ctx, user) && Date.now() < until && !s.destroyed && !this.ctx.draining) {
      setTimeout(() => this.admit(s, user, a, rest, until), 50);
      return;
    }
    if (s.destroyed) return;
    if (this.ctx.draining) return a.refuse({ status: 503, code: 'going_away', message: 'server is shutting down', headers: { 'retry-after': '1' } });
    if (!owns(this.ctx, user)) {
      // In a cluster the partition may have moved since the relaying node looked: retryable.
      if (this.ctx.clusterOwns) return a.refuse({ status: 503, code: 'unavailable', message: 'the shard of this user moved; retry', headers: { 'retry-after': '1' } });
      return a.refuse({ status: 500, code: 'internal', message: 'connection routed to the wrong worker' });
    }
    a.serve(rest);
  }
}
