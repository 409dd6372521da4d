import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IrisClient, IrisMessage } from '../../client/index.js';
import { P, V1Client, v1Token } from '../v1/client.js';
import { SECRET, freePort, removeDir, sdkClient, startServer, usersOn, type ServerProcess } from './helpers.js';

/**
 * The v1 gateway over TCP (gateway/v1/), with 1 and with 2 workers: with 2, the users below are owned by different
 * workers, so whichever worker the kernel gives a connection to, some LOGINs are handed to the other one.
 */
describe.each([1, 2])('v1 gateway over TCP, %i worker(s)', (workers) => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let v1Port: number;
  const open: V1Client[] = [];
  const sdk: IrisClient[] = [];
  const p = `w${workers}-`;
  const [alice, bob, carol, dave, erin, frank] = [...usersOn(0, workers, `${p}alice`), ...usersOn(workers - 1, workers, `${p}bob`), ...usersOn(0, workers, `${p}carol`), ...usersOn(workers - 1, workers, `${p}dave`), ...usersOn(0, workers, `${p}erin`), ...usersOn(workers - 1, workers, `${p}frank`)] as string[];

  async function client(user?: string, tok = true): Promise<V1Client> {
    const c = await V1Client.open('tcp', v1Port);
    open.push(c);
    if (user) await c.login(user, tok ? await v1Token(user!, SECRET) : undefined);
    return c;
  }

  beforeAll(async () => {
    v1Port = await freePort();
    ({ server, dataDir, url } = await startServer({ workers, env: { IRIS_V1_TCP_PORT: String(v1Port) } }));
  });

  afterAll(async () => {
    await Promise.all([...open.map((c) => c.close()), ...sdk.map((c) => c.close())]);
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('logs in with user:jwt, sends, receives a reliable message and acks it; status online/offline', async () => {
    const a = await client(alice);
    const b = await client(bob);
    a.write(P.send(bob!, 'hello bob'));
    await b.until('the message', () => b.messages().length === 1);
    expect(b.messages()[0]!.body).toBe('hello bob');
    expect(b.messages()[0]!.id).toMatch(/^[0-9a-f]{16}$/);
    a.write(P.status(bob!));
    const st = await a.next('status');
    expect(st).toEqual({ t: 'status', user: bob, online: true, time: 0 });
    await b.close();
    const before = a.got.length;
    a.write(P.status(bob!));
    const st2 = await a.next('status', before);
    expect(st2.online).toBe(false);
    expect(st2.time).toBeGreaterThan(1_700_000_000);
    expect(st2.time).toBeLessThan(Date.now() / 1000 + 5);
  });

  it('refuses a bad token, a token for another user, and an anonymous LOGIN (not allowed by default)', async () => {
    for (const login of [P.login(carol!, 'not.a.jwt'), P.login(carol!, await v1Token(dave!, SECRET)), P.login(carol!, await v1Token(carol!, 'wrong-secret')), P.login(carol!, await v1Token(carol!, SECRET, { issuer: 'other' })), P.login(carol!)]) {
      const c = await client();
      c.write(login);
      await c.until('AUTH_FAILED and close', () => c.closed && c.got.some((x) => x.t === 'auth_failed'));
    }
  });

  it('delivers what was sent while the recipient was offline, in order, after its LOGIN_OK', async () => {
    const c = await client(carol);
    for (let i = 0; i < 5; i++) c.write(P.send(dave!, `offline ${i}`));
    // Durable once the core acked: a status round trip after the sends is answered after them.
    c.write(P.status(dave!));
    await c.next('status');
    const d = await client(dave);
    await d.until('five messages', () => d.messages().length === 5);
    expect(d.messages().map((m) => m.body)).toEqual([0, 1, 2, 3, 4].map((i) => `offline ${i}`));
    // Acked: a new connection of dave gets nothing again.
    await d.close();
    const d2 = await client(dave);
    d2.write(P.status(carol!));
    await d2.next('status');
    expect(d2.messages()).toEqual([]);
  });

  it('takes coalesced packets from one write: LOGIN + SENDs + STATUS in one segment', async () => {
    const e = await client();
    const f = await client(frank);
    e.write(Buffer.concat([P.login(erin!, await v1Token(erin!, SECRET)), P.send(frank!, 'one'), P.send(frank!, 'two'), P.status(frank!)]));
    await e.next('login_ok');
    await f.until('two messages', () => f.messages().length === 2);
    expect(f.messages().map((m) => m.body)).toEqual(['one', 'two']);
    const st = await e.next('status');
    expect(st.online).toBe(true);
    expect(e.errors()).toEqual([]);
  });

  it('takes a packet split byte by byte across writes', async () => {
    const e = await client(erin);
    const f = await client(frank);
    const before = f.messages().length;
    const bytes = Buffer.concat([P.send(frank!, 'split across many writes'), P.status(frank!)]);
    for (const byte of bytes) {
      e.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    await f.until('the split message', () => f.messages().length === before + 1);
    expect(f.messages().at(-1)!.body).toBe('split across many writes');
    await e.next('status');
  });

  it('answers malformed input with an error frame and a close of that connection only', async () => {
    const ok = await client(alice);
    const b = await client(bob);
    const bad = await client(carol);
    bad.write(Buffer.from([0x99, 1, 2, 3]));
    await bad.until('error and close', () => bad.closed);
    expect(bad.errors()).toEqual(['unknown_packet']);
    const bad2 = await client(dave);
    bad2.write(Buffer.concat([Buffer.from([0x02, 0xff, 0xff]), Buffer.alloc(10)]));
    await bad2.until('error and close', () => bad2.closed);
    expect(bad2.errors()).toEqual(['target_too_long']);
    const pre = await client();
    pre.write(P.send(bob!, 'before login'));
    expect((await pre.next('error')).reason).toBe('login_required');
    // The other connections on the port carry on.
    const n = b.messages().length;
    ok.write(P.send(bob!, 'still here'));
    await b.until('the next message', () => b.messages().length === n + 1);
    expect(b.messages().at(-1)!.body).toBe('still here');
  });

  it('a second LOGIN of a user replaces its first v1 connection (the last LOGIN wins, as before)', async () => {
    const first = await client(carol);
    const second = await client(carol);
    await first.until('the first is closed', () => first.closed);
    const d = await client(dave);
    const n = second.messages().length;
    d.write(P.send(carol!, 'to the newest'));
    await second.until('the message', () => second.messages().length === n + 1);
  });

  it('chats with a user on this Iris\'s own protocol (the SDK), both ways', async () => {
    const a = await client(alice);
    const s = sdkClient(url, bob!, 'phone');
    sdk.push(s);
    const atSdk: IrisMessage[] = [];
    s.on('message', (m) => void atSdk.push(m));
    await s.connect();
    a.write(P.send(bob!, 'from v1'));
    await new Promise<void>((res, rej) => {
      const t = setTimeout(() => rej(new Error('sdk did not get the message')), 10_000);
      const check = () => (atSdk.some((m) => m.text() === 'from v1') ? (clearTimeout(t), res()) : setTimeout(check, 20));
      check();
    });
    expect(atSdk.find((m) => m.text() === 'from v1')!.from).toBe(alice);
    const n = a.messages().length;
    await s.send(alice!, 'from the sdk');
    await a.until('the SDK message', () => a.messages().length > n);
    expect(a.messages().at(-1)!.body).toBe('from the sdk');
  });
});

describe('v1 gateway: LOGIN rate limit per client IP', () => {
  it('answers RATE_LIMITED and closes past IRIS_CONNECT_RATE, as the old server did', async () => {
    const v1Port = await freePort();
    const { server, dataDir } = await startServer({ workers: 1, env: { IRIS_V1_TCP_PORT: String(v1Port), IRIS_CONNECT_RATE: '3' } });
    const open: V1Client[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const c = await V1Client.open('tcp', v1Port);
        open.push(c);
        await c.login(`rl-${i}`, await v1Token(`rl-${i}`, SECRET));
      }
      const c = await V1Client.open('tcp', v1Port);
      open.push(c);
      c.write(P.login('rl-4', await v1Token('rl-4', SECRET)));
      await c.until('RATE_LIMITED and close', () => c.closed && c.got.some((x) => x.t === 'rate_limited_login'));
    } finally {
      await Promise.all(open.map((c) => c.close()));
      await server.stop();
      removeDir(dataDir);
    }
  });
});
