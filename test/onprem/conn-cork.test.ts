import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { WsConn } from '../../onprem/conn.js';

/**
 * The on-prem Conn writes a socket's frames of one event-loop turn with one write (onprem/conn.ts). Counted
 * at the socket: every write that reaches the stream implementation (_write or _writev) is one syscall.
 */

interface Pair {
  conn: WsConn;
  socket: Duplex;
  client: WebSocket;
  writes: () => number;
  received: Buffer[];
}

let http: Server;
let port = 0;
const pending: ((p: { ws: WebSocket; socket: Duplex }) => void)[] = [];
const owner = { sent(): void {}, closing(): void {} };

beforeAll(async () => {
  http = createServer();
  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req, socket: Duplex, head) => wss.handleUpgrade(req, socket, head, (ws) => pending.shift()!({ ws, socket })));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  port = (http.address() as { port: number }).port;
});
afterAll(() => new Promise<void>((r) => http.close(() => r())));

async function pair(): Promise<Pair> {
  const server = new Promise<{ ws: WebSocket; socket: Duplex }>((r) => pending.push(r));
  const client = new WebSocket(`ws://127.0.0.1:${port}/`);
  const received: Buffer[] = [];
  client.on('message', (d: Buffer) => received.push(d));
  await new Promise((r) => client.once('open', r));
  const { ws, socket } = await server;
  // Count what reaches the stream implementation, after Writable's own buffering (and cork) are done.
  let writes = 0;
  const s = socket as Duplex & { _write: Duplex['_write']; _writev?: Duplex['_writev'] };
  const write = s._write.bind(s);
  s._write = (chunk, enc, cb) => {
    writes++;
    write(chunk, enc, cb);
  };
  const writev = s._writev?.bind(s);
  if (writev) {
    s._writev = (chunks, cb) => {
      writes++;
      writev(chunks, cb);
    };
  }
  return { conn: new WsConn(ws, socket, owner), socket, client, writes: () => writes, received };
}

function until(cond: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const check = (): void => (cond() ? resolve() : void setImmediate(check));
    check();
  });
}

describe('on-prem Conn: frames of one turn, one write', () => {
  it('writes five small frames sent in one turn with one write, and the client gets all five in order', async () => {
    const p = await pair();
    for (let i = 0; i < 5; i++) p.conn.send(new Uint8Array([i, i, i]));
    expect(p.writes()).toBe(0); // held until the end of the turn
    await until(() => p.received.length === 5);
    expect(p.writes()).toBe(1);
    expect(p.received.map((b) => b[0])).toEqual([0, 1, 2, 3, 4]);
    p.client.close();
  });

  it('writes at once when a turn has more than the cork bound waiting, so queued bytes stay small', async () => {
    const p = await pair();
    p.conn.send(new Uint8Array(20 * 1024));
    // Written now, not at the end of the turn: what is left is only what the kernel did not take.
    expect(p.writes()).toBe(1);
    expect(p.socket.writableCorked).toBe(0);
    p.conn.send(new Uint8Array([9]));
    await until(() => p.received.length === 2);
    expect(p.received[1]![0]).toBe(9);
    p.client.close();
  });

  it('frames of later turns are written again (the socket is corked per turn, not once)', async () => {
    const p = await pair();
    p.conn.send(new Uint8Array([1]));
    await until(() => p.received.length === 1);
    p.conn.send(new Uint8Array([2]));
    p.conn.send(new Uint8Array([3]));
    await until(() => p.received.length === 3);
    expect(p.writes()).toBe(2);
    expect(p.socket.writableCorked).toBe(0);
    p.client.close();
  });
});
