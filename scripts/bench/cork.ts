/**
 * Does writing a socket's frames of one event-loop turn together pay? (issue 8: "Where one event-loop turn
 * has several frames for one socket (acks, deliveries, receipts), measure whether writing them together helps.")
 *
 * The server side is the on-prem worker's own Conn (onprem/conn.ts WsConn, which corks a socket at its first
 * frame of a turn and uncorks every corked socket once per turn) against the same frames written with a bare
 * `ws.send` each (what WsConn did before). Clients live in a child process so the server's CPU is its own.
 * Each round, every socket gets F frames in one turn; rounds follow each other as soon as the clients have
 * read everything (bounded: --rounds). Prints server CPU per frame for each F, both ways, alternating.
 *
 *   sh scripts/node.sh --import tsx scripts/bench/cork.ts [--conns 500] [--rounds 200] [--frames 1,2,3,8,32] [--size 120] [--repeat 3]
 */
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';
import { WsConn } from '../../onprem/conn.js';

const SELF = fileURLToPath(import.meta.url);

type ToClient = { t: 'go'; port: number; conns: number } | { t: 'expect'; bytes: number };
type FromClient = { t: 'open' } | { t: 'got' };

// ------------------------------------------------------------------ client process: read and count

async function client(): Promise<void> {
  let want = 0;
  let got = 0;
  const check = (): void => {
    if (want > 0 && got >= want) {
      want = 0;
      got = 0;
      process.send!({ t: 'got' } satisfies FromClient);
    }
  };
  process.on('message', (m: ToClient) => {
    if (m.t === 'expect') {
      want = m.bytes;
      check();
      return;
    }
    let open = 0;
    for (let i = 0; i < m.conns; i++) {
      const ws = new WebSocket(`ws://127.0.0.1:${m.port}/`);
      ws.on('message', (d: Buffer) => {
        got += d.length; // payload bytes
        check();
      });
      ws.on('open', () => {
        if (++open === m.conns) process.send!({ t: 'open' } satisfies FromClient);
      });
      ws.on('error', (e) => {
        console.error(e.message);
        process.exit(1);
      });
    }
  });
}

// ------------------------------------------------------------------ server: the measured side

async function server(): Promise<void> {
  const { values } = parseArgs({
    options: {
      conns: { type: 'string', default: '500' },
      rounds: { type: 'string', default: '200' },
      frames: { type: 'string', default: '1,2,3,8,32' },
      size: { type: 'string', default: '120' },
      repeat: { type: 'string', default: '3' },
    },
  });
  const conns = Number(values.conns);
  const rounds = Number(values.rounds);
  const size = Number(values.size);
  const repeat = Number(values.repeat);
  const framesList = values.frames.split(',').map(Number);

  const owner = { sent(): void {}, closing(): void {} };
  const sockets: { ws: WebSocket; conn: WsConn }[] = [];
  const http = createServer();
  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req, socket: Duplex, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => sockets.push({ ws, conn: new WsConn(ws, socket, owner) }));
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const port = (http.address() as { port: number }).port;

  const child = fork(SELF, ['--client'], { stdio: 'inherit' });
  const next = (): Promise<FromClient> => new Promise((r) => child.once('message', (m: FromClient) => r(m)));
  const opened = next();
  child.send({ t: 'go', port, conns } satisfies ToClient);
  await opened;

  const frame = Buffer.alloc(size, 7);

  async function run(perTurn: number, corked: boolean): Promise<number> {
    const t0 = process.cpuUsage();
    for (let r = 0; r < rounds; r++) {
      const done = next();
      child.send({ t: 'expect', bytes: conns * perTurn * size } satisfies ToClient);
      for (const s of sockets) {
        for (let f = 0; f < perTurn; f++) {
          if (corked) s.conn.send(frame);
          else s.ws.send(frame);
        }
      }
      await done;
    }
    const u = process.cpuUsage(t0);
    return (u.user + u.system) / (rounds * conns * perTurn);
  }

  console.log(`server CPU per frame (us), ${conns} sockets, ${rounds} rounds, ${size}-byte frames; frames per socket per turn:`);
  console.log('| frames/turn | ws.send each (us) | corked per turn (us) | corked / each |');
  console.log('|---|---|---|---|');
  await run(1, false); // warm-up: JIT, socket buffers
  await run(1, true);
  for (const f of framesList) {
    const each: number[] = [];
    const cork: number[] = [];
    for (let i = 0; i < repeat; i++) {
      each.push(await run(f, false));
      cork.push(await run(f, true));
    }
    const med = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    console.log(`| ${f} | ${med(each).toFixed(2)} (${each.map((x) => x.toFixed(1)).join(', ')}) | ${med(cork).toFixed(2)} (${cork.map((x) => x.toFixed(1)).join(', ')}) | ${(med(cork) / med(each)).toFixed(2)}x |`);
  }
  child.kill();
  for (const s of sockets) s.ws.terminate();
  http.close();
}

if (process.argv.includes('--client')) void client();
else
  void server().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
