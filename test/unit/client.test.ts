import { afterEach, describe, expect, it } from 'vitest';
import { IrisClient, IrisError, MemoryStore, type IrisClientOptions, type IrisMessage, type SocketEvent, type SocketInit, type StoredEntry } from '../../client/index.js';
import {
  PING_TEXT,
  decodeFrame,
  encodeFrame,
  type ClientFrame,
  type Entry,
  type Frame,
  type ServerFrame,
} from '../../protocol/index.js';

/**
 * SDK logic against a scripted fake WebSocket: the test plays the server. Each test drives the client through
 * the standard WebSocket surface only (open / message / close / error events), like a real server would.
 */

type Ev = 'open' | 'message' | 'close' | 'error';

class FakeSocket {
  static all: FakeSocket[] = [];
  readyState = 0;
  protocol = '';
  binaryType = 'blob';
  readonly raw: (string | Uint8Array)[] = [];
  private readonly listeners = new Map<Ev, ((e: SocketEvent) => void)[]>();

  constructor(
    readonly url: string,
    readonly init: SocketInit,
  ) {
    FakeSocket.all.push(this);
  }

  addEventListener(type: Ev, fn: (e: SocketEvent) => void): void {
    const l = this.listeners.get(type) ?? [];
    l.push(fn);
    this.listeners.set(type, l);
  }

  send(data: string | ArrayBuffer | ArrayBufferView): void {
    if (this.readyState !== 1) throw new Error('not open');
    if (typeof data === 'string') this.raw.push(data);
    else if (data instanceof ArrayBuffer) this.raw.push(new Uint8Array(data.slice(0)));
    else this.raw.push(new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice());
  }

  close(code = 1000, reason = ''): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    queueMicrotask(() => this.fire('close', { code, reason }));
  }

  // ---- the server's side ----

  private fire(type: Ev, e: SocketEvent): void {
    for (const fn of this.listeners.get(type) ?? []) fn(e);
  }

  accept(): void {
    this.readyState = 1;
    this.protocol = 'iris.v1';
    this.fire('open', {});
  }

  /** Refuses the handshake the way `ws` reports it (the standard WebSocket carries no text). */
  refuse(text = ''): void {
    this.readyState = 3;
    this.fire('error', text ? { message: text } : {});
    this.fire('close', { code: 1006, reason: '' });
  }

  push(f: ServerFrame, enc: 'binary' | 'json' = 'binary'): void {
    const data = encodeFrame(f, enc);
    this.fire('message', { data: typeof data === 'string' ? data : data.slice().buffer });
  }

  serverClose(code: number, reason = ''): void {
    this.readyState = 3;
    this.fire('close', { code, reason });
  }

  /** Client frames received so far (the heartbeat ping text excluded). */
  frames(): ClientFrame[] {
    return this.raw.filter((d) => d !== PING_TEXT).map((d) => decodeFrame(d) as ClientFrame);
  }

  framesOf<T extends Frame['t']>(t: T): Extract<ClientFrame, { t: T }>[] {
    return this.frames().filter((f): f is Extract<ClientFrame, { t: T }> => f.t === t);
  }

  /** Accepts the socket, waits for the hello and answers it. */
  async welcome(cursor?: number, head = 0): Promise<Extract<ClientFrame, { t: 'hello' }>> {
    this.accept();
    await waitFor(() => this.framesOf('hello').length === 1);
    const hello = this.framesOf('hello')[0]!;
    const c = cursor ?? hello.cursor;
    this.push({ t: 'welcome', user: 'alice', device: hello.device, cursor: c, head: Math.max(head, c), time: Date.now() });
    return hello;
  }
}

async function waitFor(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('waitFor: condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function lastSocket(): FakeSocket {
  const s = FakeSocket.all[FakeSocket.all.length - 1];
  if (!s) throw new Error('no socket yet');
  return s;
}

async function nextSocket(count: number): Promise<FakeSocket> {
  await waitFor(() => FakeSocket.all.length >= count);
  return FakeSocket.all[count - 1]!;
}

const clients: IrisClient[] = [];
function client(extra: Partial<IrisClientOptions> = {}): IrisClient {
  const c = new IrisClient({
    url: 'ws://iris.test/v1/connect',
    token: 'tok',
    device: 'phone',
    WebSocket: FakeSocket,
    reconnect: { baseMs: 5, maxMs: 20 },
    // No server to ask why a handshake failed, unless a test plays one.
    fetch: () => Promise.reject(new Error('offline')),
    ...extra,
  });
  clients.push(c);
  return c;
}

function entry(seq: number, over: Partial<Entry> = {}): Entry {
  return { seq, kind: 'message', msg: `bob:${seq}`, peer: 'bob', ts: 1000 + seq, body: new TextEncoder().encode(`m${seq}`), ...over };
}

afterEach(async () => {
  for (const c of clients.splice(0)) await Promise.race([c.close(), sleep(50)]);
  FakeSocket.all = [];
});

describe('IrisClient: connect', () => {
  it('offers iris.v1 plus the bearer subprotocol, sends hello with the stored cursor, resolves on welcome', async () => {
    const states: string[] = [];
    const c = client({ store: new MemoryStore({ cursor: 41 }) });
    c.on('state', (s) => void states.push(s));
    const p = c.connect();
    const s = await nextSocket(1);
    expect(s.init).toEqual(['iris.v1', 'bearer.tok']);
    const hello = await s.welcome();
    expect(hello).toEqual({ t: 'hello', device: 'phone', cursor: 41, receipts: 0, reads: 0, features: 31 });
    const w = await p;
    expect(w.cursor).toBe(41);
    expect(c.state).toBe('open');
    expect(states).toEqual(['connecting', 'open']);
  });

  it('puts the token in the query string with tokenTransport "query", and asks a token function each time', async () => {
    let n = 0;
    const c = client({ tokenTransport: 'query', token: () => `t${++n}` });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    expect(new URL(s.url).searchParams.get('access_token')).toBe('t1');
    expect(s.init).toEqual(['iris.v1']);
    await s.welcome();
    s.serverClose(1001);
    const s2 = await nextSocket(2);
    expect(new URL(s2.url).searchParams.get('access_token')).toBe('t2');
  });

  it('rejects connect() with auth_failed (status from the error text) and does not retry a string token', async () => {
    const c = client();
    const p = c.connect();
    (await nextSocket(1)).refuse('Unexpected server response: 401');
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IrisError);
    expect((err as IrisError).code).toBe('auth_failed');
    expect((err as IrisError).status).toBe(401);
    await sleep(60);
    expect(FakeSocket.all).toHaveLength(1);
    expect(c.state).toBe('closed');
  });

  it('treats a failed handshake with an expired JWT as a 401 refusal, even after having been connected', async () => {
    const payload = btoa(JSON.stringify({ sub: 'alice', exp: Math.floor(Date.now() / 1000) - 3600 })).replace(/=+$/, '');
    const c = client({ token: `eyJhbGciOiJIUzI1NiJ9.${payload}.sig` });
    const errors: IrisError[] = [];
    c.on('error', (e) => void errors.push(e));
    c.connect().catch(() => {});
    await (await nextSocket(1)).welcome();
    lastSocket().serverClose(1006);
    (await nextSocket(2)).refuse();
    await waitFor(() => c.state === 'closed');
    expect(errors.map((e) => [e.code, e.status])).toEqual([['auth_failed', 401]]);
    await sleep(60);
    expect(FakeSocket.all).toHaveLength(2);
  });

  it('passes an Authorization header through the undici-style init with tokenTransport "header"', async () => {
    const c = client({ tokenTransport: 'header' });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    expect(s.url).toBe('ws://iris.test/v1/connect');
    expect(s.init).toEqual({ protocols: ['iris.v1'], headers: { authorization: 'Bearer tok' } });
  });

  it('uses JSON text frames with encoding "json"', async () => {
    const c = client({ encoding: 'json' });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    s.accept();
    await waitFor(() => s.raw.length > 0);
    expect(typeof s.raw[0]).toBe('string');
    expect(JSON.parse(s.raw[0] as string)).toEqual({ t: 'hello', device: 'phone', cursor: 0, receipts: 0, reads: 0, features: 31 });
  });
});

describe('IrisClient: send and outbox', () => {
  it('resolves send() on send_ack, dup acks too', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p1 = c.send('bob', 'hi', { id: 'x1' });
    await waitFor(() => s.framesOf('send').length === 1);
    const sent = s.framesOf('send')[0]!;
    expect(sent.id).toBe('x1');
    expect(sent.to).toBe('bob');
    expect(new TextDecoder().decode(sent.body)).toBe('hi');
    s.push({ t: 'send_ack', id: 'x1', msg: 'alice:1', ts: 5, dup: false });
    expect(await p1).toMatchObject({ id: 'x1', msg: 'alice:1', dup: false });
    const p2 = c.send('bob', 'hi', { id: 'x1' });
    await waitFor(() => s.framesOf('send').length === 2);
    s.push({ t: 'send_ack', id: 'x1', msg: 'alice:1', ts: 5, dup: true });
    expect(await p2).toMatchObject({ msg: 'alice:1', dup: true });
    expect(c.pending).toBe(0);
  });

  it('hands out its own shapes: the welcome, the ack and the ack event carry no wire tag', async () => {
    const c = client();
    const acks: unknown[] = [];
    const welcomes: unknown[] = [];
    c.on('ack', (a) => void acks.push(a));
    c.on('welcome', (w) => void welcomes.push(w));
    const connected = c.connect();
    const s = await nextSocket(1);
    await s.welcome(0, 3);
    const w = await connected;
    expect(w).toEqual({ user: 'alice', device: 'phone', cursor: 0, head: 3, time: w.time });
    expect(welcomes).toEqual([w]);
    const p = c.send('bob', 'hi', { id: 'x1' });
    await waitFor(() => s.framesOf('send').length === 1);
    s.push({ t: 'send_ack', id: 'x1', msg: 'alice:1', ts: 5, dup: false });
    expect(await p).toEqual({ id: 'x1', msg: 'alice:1', ts: 5, dup: false });
    expect(acks).toEqual([{ id: 'x1', msg: 'alice:1', ts: 5, dup: false, to: 'bob' }]);
  });

  it('gives every send a distinct id', async () => {
    const c = client({ retry: false });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    for (let i = 0; i < 50; i++) void c.send('bob', `m${i}`).catch(() => {});
    await waitFor(() => s.framesOf('send').length === 50);
    expect(new Set(s.framesOf('send').map((f) => f.id)).size).toBe(50);
  });

  it('resends unacked sends with the same ids, in order, after a reconnect; queues sends made while disconnected', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    const p1 = c.send('bob', 'one');
    const p2 = c.send('bob', 'two');
    await waitFor(() => s1.framesOf('send').length === 2); // pipelined
    s1.push({ t: 'send_ack', id: s1.framesOf('send')[0]!.id, msg: 'alice:1', ts: 1, dup: false });
    await p1;
    const ids = s1.framesOf('send').map((f) => f.id);
    s1.serverClose(1006); // "two" was maybe stored, maybe not: only its resend can tell
    await waitFor(() => c.state === 'reconnecting');
    const p3 = c.send('bob', 'three'); // while disconnected
    const s2 = await nextSocket(2);
    await s2.welcome();
    await waitFor(() => s2.framesOf('send').length === 2);
    expect(s2.framesOf('send')[0]!.id).toBe(ids[1]);
    s2.push({ t: 'send_ack', id: ids[1]!, msg: 'alice:2', ts: 2, dup: true });
    const resent = s2.framesOf('send');
    expect(resent.map((f) => new TextDecoder().decode(f.body))).toEqual(['two', 'three']);
    s2.push({ t: 'send_ack', id: resent[1]!.id, msg: 'alice:3', ts: 3, dup: false });
    expect((await p2).msg).toBe('alice:2');
    expect((await p3).msg).toBe('alice:3');
  });

  it('with retry: false, rejects a send with a typed IrisError on an error frame that names it, and does not resend it', async () => {
    const c = client({ retry: false });
    c.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    const p = c.send('bob', 'x', { id: 'r1' });
    await waitFor(() => s1.framesOf('send').length === 1);
    s1.push({ t: 'error', code: 'rate_limited', message: 'slow down', ref: 'r1', retryAfter: 250 });
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect(err).toBeInstanceOf(IrisError);
    expect([err.code, err.retryAfter, err.ref]).toEqual(['rate_limited', 250, 'r1']);
    s1.serverClose(1006);
    const s2 = await nextSocket(2);
    await s2.welcome();
    await sleep(20);
    expect(s2.framesOf('send')).toHaveLength(0);
  });

  it('refuses sends beyond maxOutbox with outbox_full', async () => {
    const c = client({ maxOutbox: 2 });
    void c.send('bob', 'a').catch(() => {});
    void c.send('bob', 'b').catch(() => {});
    const err = (await c.send('bob', 'c').catch((e: unknown) => e)) as IrisError;
    expect(err.code).toBe('outbox_full');
    expect(c.pending).toBe(2);
  });

  it('validates recipient and body size before queueing', async () => {
    const c = client();
    expect(((await c.send('not a user', 'x').catch((e: unknown) => e)) as IrisError).code).toBe('invalid_field');
    expect(((await c.send('bob', new Uint8Array(64 * 1024 + 1)).catch((e: unknown) => e)) as IrisError).code).toBe('frame_too_large');
    expect(c.pending).toBe(0);
  });
});

describe('IrisClient: deliveries, acks and the cursor', () => {
  it('hands each entry to the app once: drops seq <= cursor, and duplicates within a stream', async () => {
    const store = new MemoryStore({ cursor: 5 });
    const c = client({ store, ack: { every: 100, delayMs: 5 } });
    const got: number[] = [];
    c.on('message', (m) => void got.push(m.seq));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    expect((await s.welcome()).cursor).toBe(5);
    s.push({ t: 'deliver', entries: [entry(4), entry(5), entry(6), entry(7)] });
    s.push({ t: 'deliver', entries: [entry(7), entry(8)] });
    await waitFor(() => s.framesOf('deliver_ack').some((a) => a.seq === 8));
    expect(got).toEqual([6, 7, 8]);
    expect(store.cursor).toBe(8);
  });

  it('acks cumulatively after `every` entries, and after the delay for the rest', async () => {
    const c = client({ ack: { every: 3, delayMs: 150 } });
    c.on('message', () => {});
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'deliver', entries: [1, 2, 3, 4, 5, 6, 7].map((n) => entry(n)) });
    await waitFor(() => s.framesOf('deliver_ack').length === 2);
    expect(s.framesOf('deliver_ack').map((a) => a.seq)).toEqual([3, 6]);
    await sleep(60);
    expect(s.framesOf('deliver_ack')).toHaveLength(2); // 7 waits for the delay
    await waitFor(() => s.framesOf('deliver_ack').length === 3);
    expect(s.framesOf('deliver_ack')[2]!.seq).toBe(7);
  });

  it('acks only after the app handler finished, and hands entries over one at a time in order', async () => {
    const c = client({ ack: { every: 1, delayMs: 0 } });
    let release: () => void = () => {};
    const seen: number[] = [];
    c.on('message', async (m: IrisMessage) => {
      seen.push(m.seq);
      if (m.seq === 2) await new Promise<void>((r) => (release = r));
    });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3)] });
    await waitFor(() => s.framesOf('deliver_ack').length === 1);
    await sleep(30);
    expect(seen).toEqual([1, 2]);
    expect(s.framesOf('deliver_ack').map((a) => a.seq)).toEqual([1]);
    expect(c.cursor).toBe(3); // the whole frame was recorded as handed out before the first listener ran
    release();
    await waitFor(() => s.framesOf('deliver_ack').length === 3);
    expect(seen).toEqual([1, 2, 3]);
    expect(s.framesOf('deliver_ack').map((a) => a.seq)).toEqual([1, 2, 3]);
  });

  it('emits receipts for delivered entries and the message text for messages', async () => {
    const c = client();
    const msgs: string[] = [];
    const receipts: [string, string][] = [];
    c.on('message', (m) => void msgs.push(`${m.from}:${m.text()}`));
    c.on('receipt', (r) => void receipts.push([r.msg, r.by]));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'deliver', entries: [entry(1), entry(2, { kind: 'delivered', msg: 'alice:9', body: new Uint8Array(0) })] });
    await waitFor(() => c.cursor === 2);
    expect(msgs).toEqual(['bob:m1']);
    expect(receipts).toEqual([['alice:9', 'bob']]);
  });

  it('emits receipt states, keeps their version in the store and resumes from it in the next hello', async () => {
    const store = new MemoryStore();
    const c = client({ store });
    const receipts: [string, string, number][] = [];
    c.on('receipt', (r) => void receipts.push([r.msg, r.by, r.seq]));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    expect((await s.welcome()).receipts).toBe(0);
    s.push({ t: 'receipts', upTo: 3, items: [{ peer: 'bob', msg: 'alice:9', ts: 5 }, { peer: 'carol', msg: 'alice:4', ts: 6 }] });
    s.push({ t: 'receipts', upTo: 4, items: [{ peer: 'bob', msg: 'alice:11', ts: 7 }] }, 'json');
    await waitFor(() => store.receipts === 4);
    expect(receipts).toEqual([['alice:9', 'bob', 0], ['alice:4', 'carol', 0], ['alice:11', 'bob', 0]]);
    // Not acked: receipts are state, not inbox entries.
    expect(s.framesOf('deliver_ack')).toEqual([]);
    await c.close();

    // A later client on the same store asks only for what changed after version 4.
    const c2 = client({ store });
    c2.connect().catch(() => {});
    const s2 = await nextSocket(2);
    expect((await s2.welcome()).receipts).toBe(4);
  });

  it('read receipts: markRead writes a coalesced read frame, emits read / readState / settings, resumes by read version', async () => {
    const store = new MemoryStore();
    const c = client({ store });
    const reads: [string, string, number][] = [];
    const positions: [string, string][] = [];
    const settings: boolean[] = [];
    c.on('read', (r) => void reads.push([r.by, r.msg, r.ts]));
    c.on('readState', (p) => void positions.push([p.conv, p.msg]));
    c.on('settings', (x) => void settings.push(x.readReceipts));
    expect(() => c.markRead('bob', 'carol:3')).toThrow(IrisError);
    // Before a connection: only the newest mark per conversation is written, after the welcome.
    c.markRead('bob', 'bob:2');
    c.markRead('bob', 'bob:5');
    c.setReadReceipts(false);
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    expect((await s.welcome()).reads).toBe(0);
    await waitFor(() => s.framesOf('read').length === 1);
    expect(s.framesOf('read')).toEqual([{ t: 'read', conv: 'bob', msg: 'bob:5' }]);
    expect(s.framesOf('set_settings')).toEqual([{ t: 'set_settings', readReceipts: false }]);
    s.push({ t: 'settings', readReceipts: false });
    s.push({ t: 'receipts', upTo: 1, items: [{ peer: 'bob', msg: 'alice:9', ts: 5, read: 'alice:8', readTs: 6 }] });
    s.push({ t: 'read_state', upTo: 7, items: [{ conv: 'bob', msg: 'bob:5', ts: 8 }] }, 'json');
    const groupReads: string[] = [];
    c.on('groupRead', (g) => void groupReads.push(`${g.group}@${g.seq}`));
    s.push({ t: 'group_read', group: 'team', seq: 4 });
    await waitFor(() => store.reads === 7 && groupReads.length === 1);
    expect(groupReads).toEqual(['team@4']);
    expect(settings).toEqual([false]);
    expect(c.readReceipts).toBe(false);
    expect(reads).toEqual([['bob', 'alice:8', 6]]);
    expect(positions).toEqual([['bob', 'bob:5']]);
    c.markRead('carol', 'carol:1');
    await waitFor(() => s.framesOf('read').length === 2);
    await c.close();
    const c2 = client({ store });
    c2.connect().catch(() => {});
    const s2 = await nextSocket(2);
    expect(await s2.welcome()).toMatchObject({ receipts: 1, reads: 7 });
  });

  it('never acks beyond what the current socket delivered, and skips what comes again', async () => {
    const c = client({ ack: { every: 1, delayMs: 0 } });
    let release: () => void = () => {};
    const seen: number[] = [];
    c.on('message', async (m) => {
      seen.push(m.seq);
      if (m.seq === 2) await new Promise<void>((r) => (release = r));
    });
    c.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome(0, 10);
    s1.push({ t: 'deliver', entries: [entry(1), entry(2)] });
    await waitFor(() => seen.length === 2 && s1.framesOf('deliver_ack').length === 1);
    s1.serverClose(1006); // while the app still works on 2
    const s2 = await nextSocket(2);
    const hello = await s2.welcome();
    expect(hello.cursor).toBe(2); // 2 is handed out (in the store), so it is never emitted again
    release(); // cursor moves to 2, but this socket has only delivered up to 1
    await waitFor(() => c.cursor === 2);
    await sleep(20);
    expect(s2.framesOf('deliver_ack')).toHaveLength(0);
    s2.push({ t: 'deliver', entries: [entry(2), entry(3)] });
    await waitFor(() => s2.framesOf('deliver_ack').some((a) => a.seq === 3));
    expect(seen).toEqual([1, 2, 3]);
    expect(s2.framesOf('deliver_ack').map((a) => a.seq)).toEqual([3]); // the hello already told the server 2
  });
});

describe('IrisClient: store persistence across processes', () => {
  it('a new client with the same store resumes from the saved cursor and resends the saved outbox with the same ids', async () => {
    const store = new MemoryStore();
    const c1 = client({ store, ack: { every: 1000, delayMs: 10_000 } });
    c1.on('message', () => {});
    c1.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    s1.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3)] });
    void c1.send('bob', 'unacked').catch(() => {});
    await waitFor(() => store.cursor === 3 && s1.framesOf('send').length === 1);
    const id = s1.framesOf('send')[0]!.id;
    expect(s1.framesOf('deliver_ack')).toHaveLength(0); // killed before acking anything
    // "kill" the first process: no close, no further events reach it
    FakeSocket.all = [];

    const c2 = client({ store });
    const got: number[] = [];
    c2.on('message', (m) => void got.push(m.seq));
    const acks: string[] = [];
    c2.on('ack', (a) => void acks.push(a.id));
    c2.connect().catch(() => {});
    const s2 = await nextSocket(1);
    const hello = await s2.welcome(undefined, 4); // the server never saw an ack, and resumes after the hello cursor
    expect(hello.cursor).toBe(3);
    await waitFor(() => s2.framesOf('send').length === 1);
    expect(s2.framesOf('send')[0]!.id).toBe(id);
    s2.push({ t: 'send_ack', id, msg: 'alice:1', ts: 1, dup: true });
    s2.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3), entry(4)] });
    await waitFor(() => store.cursor === 4 && acks.length === 1);
    expect(got).toEqual([4]);
    expect(acks).toEqual([id]);
    expect(store.outbox.size).toBe(0);
  });

  it('adopts the server cursor when it is ahead (store lost) and when the server inbox is shorter than the hello cursor', async () => {
    const store = new MemoryStore({ cursor: 50 });
    const c = client({ store });
    const got: number[] = [];
    c.on('message', (m) => void got.push(m.seq));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome(3, 3); // server data was reset: only 3 entries exist
    expect(store.cursor).toBe(3);
    s.push({ t: 'deliver', entries: [entry(4)] });
    await waitFor(() => got.length === 1);
    expect(got).toEqual([4]);
  });
});

describe('IrisClient: asynchronous stores', () => {
  /** A store whose every call takes a random few ms, recording the order of calls. */
  class SlowStore {
    readonly inner = new MemoryStore();
    readonly log: string[] = [];
    private async later(): Promise<void> {
      await sleep(Math.floor(Math.random() * 4));
    }
    async load() {
      await this.later();
      return this.inner.load();
    }
    /** Called when a cursor save completes; tests use it to look at what was acked by then. */
    onSaved: (c: number) => void = () => {};
    async saveCursor(c: number) {
      await this.later();
      this.log.push(`cursor ${c}`);
      this.onSaved(c);
      this.inner.saveCursor(c);
    }
    async handOut(entries: StoredEntry[], c: number) {
      await this.later();
      this.log.push(`cursor ${c}`);
      this.onSaved(c);
      this.inner.handOut(entries, c);
    }
    async markHandled(seqs: number[]) {
      await this.later();
      this.inner.markHandled(seqs);
    }
    async putPending(p: { id: string; to: string; body: Uint8Array; createdAt: number }) {
      await this.later();
      this.log.push(`put ${new TextDecoder().decode(p.body)}`);
      this.inner.putPending(p);
    }
    async deletePending(id: string) {
      await this.later();
      this.inner.deletePending(id);
    }
  }

  it('keeps send order and saves each send before writing it, and hands out each frame in one write before acking', async () => {
    const store = new SlowStore();
    const c = client({ store, ack: { every: 1, delayMs: 0 }, retry: false });
    c.on('message', () => {});
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    for (let i = 0; i < 20; i++) void c.send('bob', `s${i}`).catch(() => {});
    await waitFor(() => s.framesOf('send').length === 20);
    expect(s.framesOf('send').map((f) => new TextDecoder().decode(f.body))).toEqual(Array.from({ length: 20 }, (_, i) => `s${i}`));
    expect(store.log.filter((l) => l.startsWith('put'))).toEqual(Array.from({ length: 20 }, (_, i) => `put s${i}`));
    const ackedWhenSaved: number[] = [];
    store.onSaved = () => ackedWhenSaved.push(Math.max(0, ...s.framesOf('deliver_ack').map((a) => a.seq)));
    s.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3)] });
    await waitFor(() => s.framesOf('deliver_ack').some((a) => a.seq === 3));
    // one write hands out the whole frame (entries + cursor 3), and it completed before any ack
    expect(ackedWhenSaved).toEqual([0]);
    expect(store.log.filter((l) => l.startsWith('cursor'))).toEqual(['cursor 3']);
    expect(s.framesOf('deliver_ack').map((a) => a.seq)).toEqual([1, 2, 3]);
    expect(store.inner.cursor).toBe(3);
  });
});

describe('IrisClient: connection upkeep', () => {
  it('does not reconnect after close code 4001 (replaced) and reports it', async () => {
    const c = client();
    const errors: IrisError[] = [];
    c.on('error', (e) => void errors.push(e));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p = c.send('bob', 'x');
    await waitFor(() => s.framesOf('send').length === 1);
    s.serverClose(4001, 'replaced');
    expect(((await p.catch((e: unknown) => e)) as IrisError).code).toBe('closed');
    await sleep(60);
    expect(FakeSocket.all).toHaveLength(1);
    expect(c.state).toBe('closed');
    expect(errors.map((e) => [e.code, e.closeCode])).toEqual([['closed', 4001]]);
  });

  it('reconnects after other closes, with backoff, and resets to open', async () => {
    const states: string[] = [];
    const c = client();
    c.on('state', (s) => void states.push(s));
    c.connect().catch(() => {});
    await (await nextSocket(1)).welcome();
    lastSocket().serverClose(1011);
    (await nextSocket(2)).refuse(); // server still down: keep trying
    await (await nextSocket(3)).welcome();
    await waitFor(() => c.state === 'open');
    expect(states).toEqual(['connecting', 'open', 'reconnecting', 'open']);
  });

  it('pings with the exact ping text when idle, and reconnects when nothing arrives for two intervals', async () => {
    const c = client({ heartbeatMs: 40 });
    c.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    await waitFor(() => s1.raw.includes(PING_TEXT), 500);
    // no pong, no traffic: the client gives up on this socket and opens another
    const s2 = await nextSocket(2);
    expect(s1.readyState).toBe(3);
    await s2.welcome();
    expect(c.state).toBe('open');
  });

  it('answers presence() from the presence frame with its ref, and rejects after close()', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p = c.presence(['bob', 'carol']);
    await waitFor(() => s.framesOf('presence_query').length === 1);
    const q = s.framesOf('presence_query')[0]!;
    expect(q.users).toEqual(['bob', 'carol']);
    s.push({ t: 'presence', ref: 'someone-else', users: [] });
    s.push({ t: 'presence', ref: q.ref, users: [{ user: 'bob', online: true, lastSeen: 7 }, { user: 'carol', online: false, lastSeen: 0 }] });
    expect(await p).toEqual([{ user: 'bob', online: true, lastSeen: 7 }, { user: 'carol', online: false, lastSeen: 0 }]);
    const p2 = c.presence(['bob']);
    await c.close();
    expect(((await p2.catch((e: unknown) => e)) as IrisError).code).toBe('closed');
  });

  it('subscribePresence(): written now and after every reconnect, typed presence events, older refs ignored', async () => {
    const c = client();
    const seen: unknown[] = [];
    c.on('presence', (p) => {
      seen.push(p);
    });
    c.subscribePresence(['bob']);
    c.setPresenceVisibility('nobody');
    c.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    await waitFor(() => s1.framesOf('presence_subscribe').length === 1);
    expect(s1.framesOf('set_presence')).toEqual([{ t: 'set_presence', visibility: 'nobody' }]);
    const old = s1.framesOf('presence_subscribe')[0]!;
    c.subscribePresence(['bob', 'carol']);
    await waitFor(() => s1.framesOf('presence_subscribe').length === 2);
    const sub = s1.framesOf('presence_subscribe')[1]!;
    expect(sub.users).toEqual(['bob', 'carol']);
    s1.push({ t: 'presence', ref: old.ref, users: [{ user: 'bob', online: true, lastSeen: 1 }] });
    s1.push({ t: 'presence', ref: sub.ref, users: [{ user: 'carol', online: false, lastSeen: 9 }] });
    await waitFor(() => seen.length === 1);
    expect(seen).toEqual([{ user: 'carol', online: false, lastSeen: 9 }]);
    s1.serverClose(1011);
    const s2 = await nextSocket(2);
    await s2.welcome();
    await waitFor(() => s2.framesOf('presence_subscribe').length === 1);
    expect(s2.framesOf('presence_subscribe')[0]).toEqual(sub);
    // The visibility was written once; the server keeps it.
    expect(s2.framesOf('set_presence')).toEqual([]);
    expect(() => c.subscribePresence(['not a user'])).toThrow(IrisError);
    await c.close();
  });

  it('flushes the pending ack on close()', async () => {
    const c = client({ ack: { every: 100, delayMs: 10_000 } });
    c.on('message', () => {});
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'deliver', entries: [entry(1), entry(2)] });
    await waitFor(() => c.cursor === 2);
    expect(s.framesOf('deliver_ack')).toHaveLength(0);
    await c.close();
    expect(s.framesOf('deliver_ack').map((a) => a.seq)).toEqual([2]);
  });

  it('surfaces error frames not tied to a request as "error" events', async () => {
    const c = client();
    const errors: IrisError[] = [];
    c.on('error', (e) => void errors.push(e));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'error', code: 'bad_ack', message: 'nope' });
    await waitFor(() => errors.length === 1);
    expect(errors[0]!.code).toBe('bad_ack');
    expect(c.state).toBe('open');
  });
});

describe('IrisClient: handed out at most once (issue 7, finding 1)', () => {
  it('records each frame as handed out (entries + cursor, one write) before any listener sees it', async () => {
    const store = new MemoryStore();
    const c = client({ store });
    const seenInStore: number[][] = [];
    c.on('message', (m) => void seenInStore.push([m.seq, store.cursor, store.unhandled.has(m.seq) ? 1 : 0]));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    s.push({ t: 'deliver', entries: [entry(1), entry(2)] });
    await waitFor(() => seenInStore.length === 2 && store.unhandled.size === 0);
    expect(seenInStore).toEqual([
      [1, 2, 1],
      [2, 2, 1],
    ]);
  });

  it('gives entries whose handler never finished to "recovered" on the next start, never as a message again', async () => {
    const store = new MemoryStore();
    const c1 = client({ store, ack: { every: 1000, delayMs: 10_000 } });
    const first: number[] = [];
    c1.on('message', async (m) => {
      first.push(m.seq);
      if (m.seq === 2) await new Promise(() => {}); // the process dies in here
    });
    c1.connect().catch(() => {});
    const s1 = await nextSocket(1);
    await s1.welcome();
    s1.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3)] });
    await waitFor(() => first.length === 2);
    FakeSocket.all = []; // "kill": nothing reaches c1 any more

    const c2 = client({ store });
    const events: string[] = [];
    c2.on('recovered', (r) => void events.push(r.kind === 'message' ? `rec ${r.message.seq} ${r.message.text()}` : r.kind === 'receipt' ? `rec-receipt ${r.receipt.seq}` : `rec-sent ${r.sent.seq}`));
    c2.on('message', (m) => void events.push(`msg ${m.seq}`));
    c2.connect().catch(() => {});
    const s2 = await nextSocket(1);
    const hello = await s2.welcome(undefined, 4); // the server resumes after the hello cursor (it never got an ack)
    expect(hello.cursor).toBe(3);
    s2.push({ t: 'deliver', entries: [entry(1), entry(2), entry(3), entry(4)] });
    await waitFor(() => events.includes('msg 4'));
    expect(events, events.join(',')).toEqual(['rec 2 m2', 'rec 3 m3', 'msg 4']);
    await waitFor(() => store.unhandled.size === 0);
    await waitFor(() => s2.framesOf('deliver_ack').some((a) => a.seq === 4));
  });
});

describe('IrisClient: why a handshake failed, token refresh (issue 7, finding 7)', () => {
  /** A fetch that answers like the server's pre-upgrade check; records the URLs and headers it was asked. */
  function fakeServer(answers: { status: number; error: string; retryAfter?: string }[]) {
    const asked: { url: string; headers: Record<string, string> }[] = [];
    const fetch = async (url: string, init: { headers: Record<string, string> }) => {
      asked.push({ url, headers: init.headers });
      const a = answers[Math.min(asked.length - 1, answers.length - 1)]!;
      return {
        status: a.status,
        headers: { get: (n: string) => (n === 'retry-after' ? (a.retryAfter ?? null) : null) },
        json: async () => ({ error: a.error, message: `said ${a.error}` }),
      };
    };
    return { asked, fetch };
  }

  it('asks the server with a GET of the same URL and token, and reports its status and reason', async () => {
    const srv = fakeServer([{ status: 401, error: 'invalid_signature' }]);
    const c = client({ fetch: srv.fetch, token: 'bad.tok.en' });
    const p = c.connect();
    (await nextSocket(1)).refuse();
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect([err.code, err.status, err.reason]).toEqual(['auth_failed', 401, 'invalid_signature']);
    expect(srv.asked.map((a) => a.url)).toEqual(['http://iris.test/v1/connect?access_token=bad.tok.en']);
    await sleep(30);
    expect(FakeSocket.all).toHaveLength(1);
    expect(c.state).toBe('closed');
  });

  it('uses the Authorization header for the GET with tokenTransport "header"', async () => {
    const srv = fakeServer([{ status: 403, error: 'claim_invalid' }]);
    const c = client({ fetch: srv.fetch, tokenTransport: 'header', url: 'wss://iris.test/v1/connect' });
    const p = c.connect();
    (await nextSocket(1)).refuse();
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect([err.code, err.status, err.reason]).toEqual(['auth_failed', 403, 'claim_invalid']);
    expect(srv.asked).toEqual([{ url: 'https://iris.test/v1/connect', headers: { authorization: 'Bearer tok' } }]);
  });

  it('on a 401 asks the token callback for a new token and connects with it', async () => {
    const srv = fakeServer([{ status: 401, error: 'token_expired' }]);
    const tokens = ['old', 'new'];
    const c = client({ fetch: srv.fetch, token: () => tokens.shift() ?? 'none' });
    const p = c.connect();
    (await nextSocket(1)).refuse();
    const s2 = await nextSocket(2);
    expect(s2.init).toEqual(['iris.v1', 'bearer.new']);
    await s2.welcome();
    await p;
    expect(c.state).toBe('open');
  });

  it('gives up with auth_failed when the callback returns the refused token again, or throws', async () => {
    const srv = fakeServer([{ status: 401, error: 'token_expired' }]);
    const c = client({ fetch: srv.fetch, token: () => 'same' });
    const p = c.connect();
    (await nextSocket(1)).refuse();
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect([err.code, err.reason]).toEqual(['auth_failed', 'token_expired']);
    expect(FakeSocket.all).toHaveLength(1);

    const c2 = client({ fetch: srv.fetch, token: () => Promise.reject(new Error('no session')) });
    const err2 = (await c2.connect().catch((e: unknown) => e)) as IrisError;
    expect(err2.code).toBe('auth_failed');
    expect(err2.message).toContain('no session');
  });

  it('a token that stops being valid after connecting: error event, state closed, no retries, sends reject with auth_failed', async () => {
    const srv = fakeServer([{ status: 401, error: 'token_expired' }]);
    let n = 0;
    const c = client({ fetch: srv.fetch, token: () => `t${++n}` });
    const errors: IrisError[] = [];
    c.on('error', (e) => void errors.push(e));
    c.connect().catch(() => {});
    await (await nextSocket(1)).welcome();
    const sent = c.send('bob', 'hi').catch((e: unknown) => e);
    await waitFor(() => lastSocket().framesOf('send').length === 1);
    lastSocket().serverClose(1006);
    for (let i = 2; i <= 4; i++) (await nextSocket(i)).refuse(); // three fresh tokens, three refusals
    await waitFor(() => c.state === 'closed');
    expect(errors.map((e) => [e.code, e.status, e.reason])).toEqual([['auth_failed', 401, 'token_expired']]);
    const err = (await sent) as IrisError;
    expect([err.code, err.reason]).toEqual(['auth_failed', 'token_expired']);
    await sleep(60);
    expect(FakeSocket.all).toHaveLength(4);
  });

  it('honours Retry-After of a 503 before reconnecting, and keeps trying', async () => {
    const srv = fakeServer([{ status: 503, error: 'unavailable', retryAfter: '1' }]);
    const c = client({ fetch: srv.fetch });
    c.connect().catch(() => {});
    await (await nextSocket(1)).welcome();
    lastSocket().serverClose(1006);
    const s2 = await nextSocket(2);
    const t0 = Date.now();
    s2.refuse();
    const s3 = await nextSocket(3);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(990); // backoff alone would be <= 20 ms
    await s3.welcome();
    await waitFor(() => c.state === 'open');
  });

  it('reports status, reason and retryAfter when the first connect is refused with 429', async () => {
    const srv = fakeServer([{ status: 429, error: 'too_many_connects', retryAfter: '7' }]);
    const c = client({ fetch: srv.fetch });
    const p = c.connect();
    (await nextSocket(1)).refuse();
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect([err.code, err.status, err.reason, err.retryAfter]).toEqual(['connection_refused', 429, 'too_many_connects', 7000]);
  });
});

describe('IrisClient: transient send refusals are retried (issue 7, finding 8)', () => {
  const text = (f: { body: Uint8Array }) => new TextDecoder().decode(f.body);

  it('rewrites a rate_limited send with the same id after retryAfter; a later send to the same recipient waits behind it', async () => {
    const c = client();
    const retries: string[] = [];
    c.on('retry', (r) => void retries.push(`${r.code} ${r.retryAfter}`));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p1 = c.send('bob', 'one', { id: 'a1' });
    const p2 = c.send('bob', 'two', { id: 'a2' });
    await waitFor(() => s.framesOf('send').length === 2); // pipelined
    const t0 = Date.now();
    s.push({ t: 'error', code: 'rate_limited', message: 'slow down', ref: 'a1', retryAfter: 40 });
    s.push({ t: 'error', code: 'rate_limited', message: 'barrier', ref: 'a2', retryAfter: 40 }); // the server's barrier
    await waitFor(() => s.framesOf('send').length === 4);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(39);
    expect(s.framesOf('send').map(text)).toEqual(['one', 'two', 'one', 'two']);
    s.push({ t: 'send_ack', id: 'a1', msg: 'alice:1', ts: 1, dup: false });
    s.push({ t: 'send_ack', id: 'a2', msg: 'alice:2', ts: 2, dup: false });
    expect([(await p1).msg, (await p2).msg]).toEqual(['alice:1', 'alice:2']);
    expect(retries).toEqual(['rate_limited 40', 'rate_limited 40']);
  });

  it('inbox_full holds only that conversation; rate_limited pauses every send', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    void c.send('bob', 'b1', { id: 'b1' }).catch(() => {});
    await waitFor(() => s.framesOf('send').length === 1);
    s.push({ t: 'error', code: 'inbox_full', message: 'full', ref: 'b1', retryAfter: 60_000 });
    await waitFor(() => c.pending === 1 && s.framesOf('send').length === 1);
    void c.send('bob', 'b2', { id: 'b2' }).catch(() => {});
    void c.send('carol', 'c1', { id: 'c1' }).catch(() => {});
    await waitFor(() => s.framesOf('send').length === 2);
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['b1', 'c1']); // b2 waits behind b1
    s.push({ t: 'error', code: 'rate_limited', message: 'slow', ref: 'c1', retryAfter: 60_000 });
    await waitFor(() => c.pending === 3);
    void c.send('dave', 'd1', { id: 'd1' }).catch(() => {});
    await sleep(30);
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['b1', 'c1']); // the whole user is paused
    await c.close();
  });

  /**
   * Plays the server's send path on a fake socket: each send frame, in arrival order, is answered by dedup,
   * then the connection's barrier, then `admit` (the test's bucket). Records the order of acceptance.
   */
  function playServer(s: FakeSocket, admit: (id: string) => number) {
    const accepted: string[] = [];
    const msgOf = new Map<string, string>();
    let seen = 0;
    let barrier: { id: string; until: number } | null = null;
    const step = () => {
      const sends = s.framesOf('send');
      for (; seen < sends.length; seen++) {
        const f = sends[seen]!;
        const prior = msgOf.get(f.id);
        if (prior) {
          s.push({ t: 'send_ack', id: f.id, msg: prior, ts: 1, dup: true });
          continue;
        }
        const now = Date.now();
        if (barrier && barrier.until > now && barrier.id !== f.id) {
          s.push({ t: 'error', code: 'rate_limited', message: 'held', ref: f.id, retryAfter: Math.max(1, barrier.until - now) });
          continue;
        }
        const wait = admit(f.id);
        if (wait > 0) {
          barrier = { id: f.id, until: now + wait };
          s.push({ t: 'error', code: 'rate_limited', message: 'slow', ref: f.id, retryAfter: wait });
          continue;
        }
        if (barrier?.id === f.id) barrier = null;
        accepted.push(f.id);
        msgOf.set(f.id, `alice:${accepted.length}`);
        s.push({ t: 'send_ack', id: f.id, msg: `alice:${accepted.length}`, ts: 1, dup: false });
      }
    };
    return { accepted, step };
  }

  it('pipelines sends; with a refusal in the middle they are accepted in send() order, each send() resolving once', async () => {
    const c = client();
    const retries: string[] = [];
    c.on('retry', (r) => void retries.push(r.id));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const ids = Array.from({ length: 8 }, (_, i) => `m${i + 1}`);
    const settled: string[] = [];
    const sends = ids.map((id) =>
      c.send('bob', id, { id }).then(
        (a) => void settled.push(`${a.id} ${a.msg}`),
        (e: unknown) => void settled.push(`${id} rejected ${String(e)}`),
      ),
    );
    await waitFor(() => s.framesOf('send').length === 8); // all in flight at once: no round trip each
    // m3 finds the bucket empty; a token comes back right after, which m4 would get without the barrier.
    let tokens = 2;
    let refusedOnce = false;
    const srv = playServer(s, (id) => {
      if (id === 'm3' && !refusedOnce) {
        refusedOnce = true;
        tokens = 1_000;
        return 30;
      }
      return tokens-- > 0 ? 0 : 30;
    });
    srv.step();
    await waitFor(() => s.framesOf('send').length > 8);
    for (let i = 0; i < 50 && settled.length < 8; i++) {
      srv.step();
      await sleep(5);
    }
    await Promise.all(sends);
    expect(srv.accepted).toEqual(ids);
    expect(settled).toEqual(ids.map((id, i) => `${id} alice:${i + 1}`));
    expect(retries).toEqual(['m3', 'm4', 'm5', 'm6', 'm7', 'm8']);
    // Written again from m3, in order, once each.
    expect(s.framesOf('send').map((f) => f.id)).toEqual([...ids, ...ids.slice(2)]);
    expect(c.pending).toBe(0);
  });

  it('a send in flight behind a refused one holds its recipient until its own answer: an ack counts as accepted', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const done: string[] = [];
    const p = ['x1', 'x2', 'x3'].map((id) => c.send('bob', id, { id }).then((a) => void done.push(a.id)));
    await waitFor(() => s.framesOf('send').length === 3);
    s.push({ t: 'send_ack', id: 'x1', msg: 'alice:1', ts: 1, dup: false });
    s.push({ t: 'error', code: 'rate_limited', message: 'slow', ref: 'x2', retryAfter: 5 });
    await sleep(30); // past retryAfter: x2 is written again, but x3's answer is still out
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['x1', 'x2', 'x3', 'x2']);
    void c.send('bob', 'x4', { id: 'x4' }).then((a) => void done.push(a.id));
    await sleep(20);
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['x1', 'x2', 'x3', 'x2']); // x4 may not overtake x3
    // x3 was accepted by a server that had lost its barrier (say it restarted): it is done, not resent.
    s.push({ t: 'send_ack', id: 'x3', msg: 'alice:2', ts: 2, dup: false });
    await waitFor(() => s.framesOf('send').length === 5);
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['x1', 'x2', 'x3', 'x2', 'x4']);
    s.push({ t: 'send_ack', id: 'x2', msg: 'alice:3', ts: 3, dup: false });
    s.push({ t: 'send_ack', id: 'x4', msg: 'alice:4', ts: 4, dup: false });
    await Promise.all(p);
    await waitFor(() => done.length === 4);
    expect(done).toEqual(['x1', 'x3', 'x2', 'x4']);
  });

  it('after a rate_limited refusal paces its sends one per retryAfter until the outbox is empty', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const ids = ['y1', 'y2', 'y3'];
    const p = ids.map((id) => c.send('bob', id, { id }));
    await waitFor(() => s.framesOf('send').length === 3);
    s.push({ t: 'error', code: 'rate_limited', message: 'slow', ref: 'y1', retryAfter: 60 });
    s.push({ t: 'error', code: 'rate_limited', message: 'held', ref: 'y2', retryAfter: 60 });
    s.push({ t: 'error', code: 'rate_limited', message: 'held', ref: 'y3', retryAfter: 60 });
    await waitFor(() => s.framesOf('send').length === 4);
    await sleep(25);
    expect(s.framesOf('send').map((f) => f.id)).toEqual([...ids, 'y1']); // not y2, y3 at once: paced
    await waitFor(() => s.framesOf('send').length === 6);
    expect(s.framesOf('send').map((f) => f.id)).toEqual([...ids, ...ids]);
    ids.forEach((id, i) => s.push({ t: 'send_ack', id, msg: `alice:${i + 1}`, ts: 1, dup: false }));
    await Promise.all(p);
    // Idle again: the next burst goes out at once.
    const q = ['z1', 'z2', 'z3'].map((id) => c.send('bob', id, { id }));
    await waitFor(() => s.framesOf('send').length === 9, 20);
    ['z1', 'z2', 'z3'].forEach((id, i) => s.push({ t: 'send_ack', id, msg: `alice:${i + 4}`, ts: 1, dup: false }));
    await Promise.all(q);
  });

  it('a frame-rate refusal (no ref) writes every send in flight again, in order, after its retryAfter', async () => {
    const c = client();
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p = ['f1', 'f2'].map((id) => c.send('bob', id, { id }));
    await waitFor(() => s.framesOf('send').length === 2);
    s.push({ t: 'error', code: 'rate_limited', message: 'too many frames on this connection', retryAfter: 20 });
    await waitFor(() => s.framesOf('send').length === 3); // the window starts again from one
    s.push({ t: 'send_ack', id: 'f1', msg: 'alice:1', ts: 1, dup: false }); // the first copy was read after all
    s.push({ t: 'send_ack', id: 'f1', msg: 'alice:1', ts: 1, dup: true });
    await waitFor(() => s.framesOf('send').length === 4);
    expect(s.framesOf('send').map((f) => f.id)).toEqual(['f1', 'f2', 'f1', 'f2']);
    s.push({ t: 'send_ack', id: 'f2', msg: 'alice:2', ts: 1, dup: false });
    expect((await Promise.all(p)).map((a) => a.msg)).toEqual(['alice:1', 'alice:2']);
    expect(c.pending).toBe(0);
  });

  it('rejects once waiting longer would exceed retry.maxWaitMs, and does not retry final refusals', async () => {
    const c = client({ retry: { maxWaitMs: 100 } });
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p = c.send('bob', 'x', { id: 'x1' });
    await waitFor(() => s.framesOf('send').length === 1);
    s.push({ t: 'error', code: 'rate_limited', message: 'slow', ref: 'x1', retryAfter: 5000 });
    const err = (await p.catch((e: unknown) => e)) as IrisError;
    expect([err.code, err.retryAfter, err.ref]).toEqual(['rate_limited', 5000, 'x1']);
    const q = c.send('nobody', 'y', { id: 'y1' });
    await waitFor(() => s.framesOf('send').length === 2);
    s.push({ t: 'error', code: 'invalid_recipient', message: 'no', ref: 'y1' });
    expect(((await q.catch((e: unknown) => e)) as IrisError).code).toBe('invalid_recipient');
  });
});

describe('IrisClient: multi-device sync (PROTOCOL.md 9.9)', () => {
  it("emits 'sent' for sends of the user's other devices, in order with messages; its own are acked silently", async () => {
    const c = client();
    const events: string[] = [];
    c.on('message', (m) => void events.push(`msg ${m.from}: ${m.text()}`));
    c.on('sent', (s) => void events.push(`sent ${s.to}: ${s.text()} (${s.msg})`));
    c.connect().catch(() => {});
    const s = await nextSocket(1);
    await s.welcome();
    const p = c.send('bob', 'mine', { id: 'x1' });
    await waitFor(() => s.framesOf('send').length === 1);
    // The server writes the ack before the deliver that carries the send's own sent entry.
    s.push({ t: 'send_ack', id: 'x1', msg: 'alice:1', ts: 5, dup: false });
    await p;
    const sent = (seq: number, msg: string, text: string): Entry => entry(seq, { kind: 'sent', msg, peer: 'bob', body: new TextEncoder().encode(text) });
    s.push({ t: 'deliver', entries: [entry(1), sent(2, 'alice:1', 'mine'), sent(3, 'alice:2', 'from my laptop'), entry(4)] });
    await waitFor(() => events.length === 3);
    expect(events).toEqual(['msg bob: m1', 'sent bob: from my laptop (alice:2)', 'msg bob: m4']);
    await waitFor(() => s.framesOf('deliver_ack').some((a) => a.seq === 4));
  });
});
