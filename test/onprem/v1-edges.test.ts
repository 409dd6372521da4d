import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { P, V1Client, v1Token } from '../v1/client.js';
import { SECRET, freePort, removeDir, scrape, startServer, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * The v1 gateway at its edges (issue 14 follow-ups): a LOGIN split byte by byte, garbage before a LOGIN, a client
 * gone in the middle of a packet, a client that stops reading (the core's and the gateway's own writes both
 * bounded by IRIS_MAX_QUEUED_BYTES), IRIS_MAX_CONNECTIONS reached, and a hand-off whose owning worker died.
 */

const gauge = async (port: number, worker = 0) => (await scrape(port)).get(`iris_connections{worker="${worker}"}`) ?? 0;

describe('v1 gateway edges, 1 worker, IRIS_MAX_QUEUED_BYTES 256 KiB', () => {
  let server: ServerProcess;
  let dataDir: string;
  let port: number;
  let v1Port: number;
  const open: V1Client[] = [];

  async function client(user?: string): Promise<V1Client> {
    const c = await V1Client.open('tcp', v1Port);
    open.push(c);
    if (user) await c.login(user, await v1Token(user, SECRET));
    return c;
  }

  beforeAll(async () => {
    v1Port = await freePort();
    ({ server, dataDir, port } = await startServer({ workers: 1, env: { IRIS_V1_TCP_PORT: String(v1Port), IRIS_MAX_QUEUED_BYTES: String(256 * 1024) } }));
  });

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()));
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('reads a LOGIN split byte by byte across segments, with a SEND in the same final segment', async () => {
    const bob = await client('e-bob');
    const a = await client();
    const login = P.login('e-alice', await v1Token('e-alice', SECRET));
    for (const byte of login.subarray(0, -1)) {
      a.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    a.write(Buffer.concat([login.subarray(-1), P.send('e-bob', 'right behind the login')]));
    await a.next('login_ok');
    await bob.until('the message', () => bob.messages().some((m) => m.body === 'right behind the login'));
    expect(a.errors()).toEqual([]);
  });

  it('answers garbage before a LOGIN: a decodable packet gets login_required, an unknown opcode closes', async () => {
    const c = await client();
    c.write(Buffer.concat([P.status('e-bob'), P.send('e-bob', 'too early')]));
    await c.until('two refusals', () => c.errors().length === 2);
    expect(c.errors()).toEqual(['login_required', 'login_required']);
    await c.login('e-carol', await v1Token('e-carol', SECRET));
    // An HTTP request on the v1 port: 'G' is no opcode.
    const h = await client();
    h.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await h.until('error and close', () => h.closed);
    expect(h.errors()).toEqual(['unknown_packet']);
  });

  it('a client gone in the middle of a packet, before and after its LOGIN, leaves the connection gauge as it was', async () => {
    const base = await gauge(port);
    const pre = await client();
    pre.write(P.login('e-dave', await v1Token('e-dave', SECRET)).subarray(0, 20));
    const c = await client('e-erin');
    expect(await gauge(port)).toBe(base + 1);
    c.write(P.send('e-bob', 'cut short').subarray(0, 6));
    c.destroy();
    pre.destroy();
    await waitFor('the gauge back to its value', async () => (await gauge(port)) === base);
    // And the user can log in again at once (its old connection is gone from its mailbox).
    await client('e-erin');
    expect(await gauge(port)).toBe(base + 1);
  });

  it('closes a v1 client that stops reading once the core has more than IRIS_MAX_QUEUED_BYTES for it; nothing is lost', async () => {
    const slow = await client('e-slow');
    slow.autoAck = false;
    slow.pause();
    const base = await gauge(port);
    const s = await client('e-fast');
    const body = 'x'.repeat(32 * 1024);
    // 300 x 32 KiB: past what loopback TCP buffers (a few MiB) plus 256 KiB.
    for (let i = 0; i < 300; i++) s.write(P.send('e-slow', `${i} ${body}`));
    s.write(P.status('e-slow'));
    await s.next('status');
    await waitFor('the slow reader dropped', async () => (await gauge(port)) === base, 20_000);
    slow.resume();
    await slow.until('closed', () => slow.closed, 20_000);
    // Every message is still in its inbox: a new connection gets all of them, in order.
    const again = await client('e-slow');
    await again.until('300 messages', () => again.messages().length === 300, 30_000);
    expect(again.messages().map((m) => Number(m.body.split(' ')[0]))).toEqual([...Array(300).keys()]);
  });

  it('closes a client that does not read its error frames (a flood of bad ACKs) instead of queueing them', async () => {
    const c = await client('e-flood');
    c.pause();
    const base = await gauge(port);
    // 400,000 ACKs of an id never issued: each is answered 0xFE unknown_msg_id (17 bytes), 6.8 MB in all.
    const ack = P.ack('0000000000000000');
    const chunk = Buffer.concat(Array.from({ length: 10_000 }, () => ack));
    for (let i = 0; i < 40 && !c.closed; i++) c.write(chunk);
    await waitFor('the flooding reader dropped', async () => (await gauge(port)) === base - 1, 20_000);
  });
});

describe('v1 gateway: IRIS_MAX_CONNECTIONS reached', () => {
  it('answers 0xFE server_full and closes the LOGIN past the limit (v1 and WebSocket connections count together)', async () => {
    const v1Port = await freePort();
    const { server, dataDir } = await startServer({ workers: 1, env: { IRIS_V1_TCP_PORT: String(v1Port), IRIS_MAX_CONNECTIONS: '2' } });
    const open: V1Client[] = [];
    try {
      for (const u of ['full-a', 'full-b']) {
        const c = await V1Client.open('tcp', v1Port);
        open.push(c);
        await c.login(u, await v1Token(u, SECRET));
      }
      const c = await V1Client.open('tcp', v1Port);
      open.push(c);
      c.write(P.login('full-c', await v1Token('full-c', SECRET)));
      await c.until('server_full and close', () => c.closed);
      expect(c.errors()).toEqual(['server_full']);
      expect(c.got.some((p) => p.t === 'login_ok')).toBe(false);
      // A place frees up: the next LOGIN gets in.
      await open[0]!.close();
      await waitFor('a LOGIN accepted again', async () => {
        const d = await V1Client.open('tcp', v1Port);
        open.push(d);
        d.write(P.login('full-c', await v1Token('full-c', SECRET)));
        await d.until('an answer', () => d.closed || d.got.some((p) => p.t === 'login_ok'));
        return d.got.some((p) => p.t === 'login_ok');
      });
    } finally {
      await Promise.all(open.map((c) => c.close()));
      await server.stop();
      removeDir(dataDir);
    }
  });
});

describe('v1 gateway: the owning worker dies around a hand-off', () => {
  let server: ServerProcess;
  let dataDir: string;
  let v1Port: number;

  beforeAll(async () => {
    v1Port = await freePort();
    ({ server, dataDir } = await startServer({ workers: 2, env: { IRIS_V1_TCP_PORT: String(v1Port) } }));
  });

  afterAll(async () => {
    await server.stop();
    removeDir(dataDir);
  });

  it('every LOGIN of its users ends in LOGIN_OK or 0xFE unavailable / a close, never a hang; then they log in', async () => {
    const users = usersOn(1, 2, 'dead-owner-', 8);
    const tokens = await Promise.all(users.map((u) => v1Token(u, SECRET)));
    const killed = server.workerPids[1]!;
    expect(killed).toBeGreaterThan(1);
    const cs = await Promise.all(users.map(() => V1Client.open('tcp', v1Port).catch(() => null)));
    process.kill(killed, 'SIGKILL');
    cs.forEach((c, i) => c?.write(P.login(users[i]!, tokens[i])));
    const live = cs.filter((c): c is V1Client => c !== null);
    try {
      for (const c of live) await c.until('LOGIN_OK or a close', () => c.closed || c.got.some((p) => p.t === 'login_ok'), 15_000);
      // Sent within milliseconds of the kill, long before the worker is back: refused (seen: 5 of 8 with
      // 0xFE unavailable, accepted by the live worker; 3 bare closes, accepted by the killed one).
      expect(live.filter((c) => !c.got.some((p) => p.t === 'login_ok')).length).toBeGreaterThan(0);
      for (const c of live) {
        // Never AUTH_FAILED: the credentials were good. A refusal is unavailable (the owner is down) or a bare close.
        expect(c.got.some((p) => p.t === 'auth_failed')).toBe(false);
        expect(c.errors().every((e) => e === 'unavailable')).toBe(true);
      }
      // The worker is restarted; the users log in again.
      await waitFor('the worker restarted', async () => (await server.currentWorkerPids()).filter((p) => p !== killed).length === 2, 20_000);
      for (const [i, u] of users.entries()) {
        await waitFor(`${u} logs in again`, async () => {
          const c = await V1Client.open('tcp', v1Port);
          live.push(c);
          c.write(P.login(u, tokens[i]));
          await c.until('an answer', () => c.closed || c.got.some((p) => p.t === 'login_ok'));
          return c.got.some((p) => p.t === 'login_ok');
        }, 20_000);
      }
    } finally {
      await Promise.all(live.map((c) => c.close()));
    }
  });
});
