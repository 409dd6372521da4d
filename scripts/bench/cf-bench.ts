/**
 * Main module of scripts/bench/wrangler.bench.toml: the production Iris Worker and UserShard unchanged, plus
 * the Cloudflare baseline — a bare Durable Object with no auth, no storage and no protocol, in the same local
 * workerd, so the Iris message path can be reported as a ratio to it.
 *
 *   GET /bench/echo?room=R&id=X   (WebSocket) -> EchoShard named R. It sends one byte when the socket is
 *   accepted; then every binary message [u32 LE dest][payload] goes, unchanged, to the socket of room R tagged
 *   dest (its own socket when dest = X: a plain echo).
 *
 * With the pairs pattern both ends of a pair share a room (one object relays between its two sockets); with
 * the hot pattern every connection shares room 0 (one object). Everything else is the Iris Worker.
 *
 *   GET /bench/stats?user=U  -> UserShard(U).stats() as JSON (durable-objects/stats.ts): the counters
 *   scripts/bench/cf-rows.ts reads. Bench config only; the production edge has no such route.
 *   GET /bench/stats?group=G -> GroupShard(G).stats() (durable-objects/group-stats.ts), for its group scenario.
 */
import { DurableObject } from 'cloudflare:workers';
import iris, { GroupShard, UserShard } from '../../workers/edge.js';
import type { Env as IrisEnv } from '../../durable-objects/env.js';

export { GroupShard, UserShard };

interface Env extends IrisEnv {
  ECHO: DurableObjectNamespace<EchoShard>;
}

const READY = new Uint8Array([1]);

export class EchoShard extends DurableObject<Env> {
  override async fetch(request: Request): Promise<Response> {
    const id = new URL(request.url).searchParams.get('id') ?? '0';
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [id]);
    server.send(READY);
    return new Response(null, { status: 101, webSocket: client });
  }

  override webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): void {
    if (typeof message === 'string' || message.byteLength < 4) return;
    const dest = new DataView(message).getUint32(0, true);
    const to = this.ctx.getWebSockets(String(dest))[0] ?? ws;
    to.send(message);
  }

  override webSocketClose(ws: WebSocket, code: number): void {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, 'bye');
    } catch {
      // already closed
    }
  }
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/bench/stats') {
      const user = url.searchParams.get('user');
      const group = url.searchParams.get('group');
      if (group && env.GROUPS) return Response.json(await env.GROUPS.get(env.GROUPS.idFromName(group)).stats());
      if (!user) return new Response('user required', { status: 400 });
      return Response.json(await env.USERS.get(env.USERS.idFromName(user)).stats());
    }
    if (url.pathname === '/bench/echo') {
      if (request.headers.get('Upgrade')?.toLowerCase() !== 'websocket') return new Response('websocket only', { status: 426 });
      const room = url.searchParams.get('room') ?? '0';
      return env.ECHO.get(env.ECHO.idFromName(room)).fetch(request);
    }
    return iris.fetch(request, env);
  },
} satisfies ExportedHandler<Env>;
