/**
 * The raw baseline: a WebSocket relay on `ws` with no auth, no storage and no protocol beyond "forward these
 * bytes to connection X". It is shaped like the system under test so the ratio between the two means
 * something: one process per worker on one shared port (SO_REUSEPORT, the kernel spreads connections), and a
 * message whose destination lives in another process crosses a unix socket, as an Iris message between users
 * of two workers does.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/relay.ts [--port 8789] [--host 127.0.0.1] [--workers N]
 *
 * Client side: connect to ws://host:port/c/<id> (id: a u32); wait for the one-byte "ready" message (sent once
 * every worker knows where <id> lives); then every binary message is [u32 LE destination id][payload] and is
 * forwarded unchanged to the connection with that id. Unknown destinations are dropped and counted.
 * Prints `relay listening on ws://HOST:PORT (N workers, pids a,b,...)` when ready; SIGTERM/SIGINT stop it.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { createConnection, createServer as createNetServer, type Socket } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { freePort } from '../lib/net.js';

const SELF = fileURLToPath(import.meta.url);
const READY = Buffer.from([1]);

const T_DATA = 1;
const T_REG = 2;
const T_REGACK = 3;
const T_UNREG = 4;

type SupMsg = { t: 'listening' } | { t: 'ready' } | { t: 'fatal'; message: string };
type WorkerMsg = { t: 'connect' } | { t: 'stop' };

function fdLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : 20_000;
  } catch {
    return 20_000;
  }
}

// ------------------------------------------------------------------ worker

class PeerOut {
  private chunks: Buffer[] = [];
  private scheduled = false;
  constructor(readonly sock: Socket) {}
  push(type: number, payload: Buffer): void {
    const h = Buffer.allocUnsafe(5);
    h[0] = type;
    h.writeUInt32LE(payload.length, 1);
    this.chunks.push(h, payload);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }
  private flush(): void {
    this.scheduled = false;
    const c = this.chunks;
    this.chunks = [];
    if (c.length > 0) this.sock.write(Buffer.concat(c));
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n, 0);
  return b;
}

async function runWorker(id: number, workers: number, host: string, port: number, runDir: string): Promise<void> {
  const local = new Map<number, WebSocket>();
  const remote = new Map<number, number>();
  const regWait = new Map<number, number>();
  const out: (PeerOut | null)[] = Array.from({ length: workers }, () => null);
  let dropped = 0;
  let conns = 0;
  const maxConns = Math.max(64, fdLimit() - 1024);

  const forward = (buf: Buffer) => {
    if (buf.length < 4) return;
    const dest = buf.readUInt32LE(0);
    const ws = local.get(dest);
    if (ws) {
      ws.send(buf);
      return;
    }
    const w = remote.get(dest);
    if (w !== undefined) out[w]!.push(T_DATA, buf);
    else dropped++;
  };

  const onPeerFrame = (from: number, type: number, payload: Buffer) => {
    switch (type) {
      case T_DATA: {
        const ws = local.get(payload.readUInt32LE(0));
        if (ws) ws.send(payload);
        else dropped++;
        return;
      }
      case T_REG: {
        const cid = payload.readUInt32LE(0);
        remote.set(cid, from);
        out[from]!.push(T_REGACK, u32(cid));
        return;
      }
      case T_REGACK: {
        const cid = payload.readUInt32LE(0);
        const left = (regWait.get(cid) ?? 1) - 1;
        if (left > 0) {
          regWait.set(cid, left);
          return;
        }
        regWait.delete(cid);
        local.get(cid)?.send(READY);
        return;
      }
      case T_UNREG: {
        const cid = payload.readUInt32LE(0);
        if (remote.get(cid) === from) remote.delete(cid);
        return;
      }
    }
  };

  // Incoming peer stream: [u8 type][u32 len][payload]...; the first 4 bytes ever sent name the peer.
  const peerServer = createNetServer((s) => {
    let from = -1;
    let pending: Buffer | null = null;
    s.on('error', () => s.destroy());
    s.on('data', (chunk: Buffer) => {
      const buf = pending ? Buffer.concat([pending, chunk]) : chunk;
      let off = 0;
      if (from < 0) {
        if (buf.length < 4) {
          pending = buf;
          return;
        }
        from = buf.readUInt32LE(0);
        off = 4;
      }
      while (buf.length - off >= 5) {
        const len = buf.readUInt32LE(off + 1);
        if (buf.length - off < 5 + len) break;
        onPeerFrame(from, buf[off]!, buf.subarray(off + 5, off + 5 + len));
        off += 5 + len;
      }
      pending = off < buf.length ? buf.subarray(off) : null;
    });
  });
  const sockPath = join(runDir, `relay-${id}.sock`);
  await new Promise<void>((res, rej) => {
    peerServer.once('error', rej);
    peerServer.listen(sockPath, () => res());
  });
  process.send?.({ t: 'listening' } satisfies SupMsg);
  await new Promise<void>((res) => {
    process.on('message', (m: WorkerMsg) => {
      if (m.t === 'connect') res();
    });
  });
  await Promise.all(
    out.map(
      (_, j) =>
        j === id
          ? Promise.resolve()
          : new Promise<void>((res, rej) => {
              const s = createConnection(join(runDir, `relay-${j}.sock`));
              s.setNoDelay(true);
              s.once('error', rej);
              s.once('connect', () => {
                s.write(u32(id));
                out[j] = new PeerOut(s);
                res();
              });
            }),
    ),
  );

  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false, maxPayload: 256 * 1024 });
  const http = createHttpServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, worker: id, conns, dropped }));
      return;
    }
    res.writeHead(404).end();
  });
  http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const m = /^\/c\/(\d+)$/.exec((req.url ?? '').split('?')[0] ?? '');
    if (!m || conns >= maxConns) {
      socket.end(`HTTP/1.1 ${m ? '503 Service Unavailable' : '404 Not Found'}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    const cid = Number(m[1]) >>> 0;
    wss.handleUpgrade(req, socket, head, (ws) => {
      conns++;
      local.set(cid, ws);
      ws.on('message', (data: RawData) => forward(data as Buffer));
      ws.on('error', () => undefined);
      ws.on('close', () => {
        conns--;
        if (local.get(cid) === ws) {
          local.delete(cid);
          for (const p of out) p?.push(T_UNREG, u32(cid));
        }
      });
      if (workers === 1) ws.send(READY);
      else {
        regWait.set(cid, workers - 1);
        for (const p of out) p?.push(T_REG, u32(cid));
      }
    });
  });
  await new Promise<void>((res, rej) => {
    http.once('error', rej);
    http.listen({ host, port, reusePort: true, backlog: 4096 }, () => res());
  });
  process.send?.({ t: 'ready' } satisfies SupMsg);
  process.on('message', (m: WorkerMsg) => {
    if (m.t === 'stop') process.exit(0);
  });
  process.on('disconnect', () => process.exit(0));
  // A normal exit (not death by signal), so `node --cpu-prof` writes its profile.
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}

// ------------------------------------------------------------------ supervisor

async function runSupervisor(host: string, requestedPort: number, workers: number): Promise<void> {
  // Port 0 would give every worker a different port: pick one free port for all of them.
  const port = requestedPort === 0 ? await freePort(host) : requestedPort;
  const runDir = mkdtempSync(join(tmpdir(), 'iris-relay-'));
  const kids: ChildProcess[] = [];
  let stopping = false;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    for (const k of kids) k.kill('SIGTERM');
    rmSync(runDir, { recursive: true, force: true });
    setTimeout(() => process.exit(code), 200).unref();
  };
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
  let listening = 0;
  let ready = 0;
  for (let i = 0; i < workers; i++) {
    const k = fork(SELF, ['--worker', String(i), '--workers', String(workers), '--host', host, '--port', String(port), '--run-dir', runDir], {
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    kids.push(k);
    k.on('message', (m: SupMsg) => {
      if (m.t === 'listening' && ++listening === workers) for (const x of kids) x.send({ t: 'connect' } satisfies WorkerMsg);
      if (m.t === 'ready' && ++ready === workers) {
        process.stdout.write(`relay listening on ws://${host}:${port} (${workers} workers, pids ${kids.map((x) => x.pid).join(',')})\n`);
      }
      if (m.t === 'fatal') {
        process.stderr.write(`relay worker ${i}: ${m.message}\n`);
        stop(1);
      }
    });
    k.on('exit', (code) => {
      if (!stopping) {
        process.stderr.write(`relay worker ${i} exited (${code}); stopping\n`);
        stop(1);
      }
    });
  }
}

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '8789' },
    workers: { type: 'string', default: String(availableParallelism()) },
    worker: { type: 'string' },
    'run-dir': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write('usage: relay.ts [--port 8789] [--host 127.0.0.1] [--workers N]\n');
  process.exit(0);
}
const host = values.host!;
const port = Number(values.port);
const workers = Number(values.workers);
if (values.worker !== undefined) {
  runWorker(Number(values.worker), workers, host, port, values['run-dir']!).catch((e: unknown) => {
    process.send?.({ t: 'fatal', message: String(e) } satisfies SupMsg);
    process.exit(1);
  });
} else {
  void runSupervisor(host, port, workers);
}
