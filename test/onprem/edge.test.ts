import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { MAX_TOKEN_LENGTH } from '../../auth/index.js';
import { LIMITS, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX } from '../../protocol/index.js';
import { RawClient, SECRET, removeDir, scrape, startServer, token, usersOn, type ServerProcess } from './helpers.js';

/**
 * The listener's edge behaviour, matching workers/edge.ts: refusals before the upgrade with the same statuses
 * and JSON bodies, the token transports, the hello timeout, the frame size caps, health and metrics.
 */

interface Refused {
  status: number;
  body: string;
}

async function refused(p: Promise<RawClient>): Promise<Refused> {
  try {
    const c = await p;
    c.close();
  } catch (e) {
    const x = e as { status?: number; body?: string };
    if (typeof x.status === 'number') return { status: x.status, body: x.body ?? '' };
    throw e;
  }
  throw new Error('expected the upgrade to be refused');
}

describe('edge: HTTP and WebSocket limits', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  let port: number;
  const [u] = usersOn(0, 2, 'edge-');

  beforeAll(async () => {
    ({ server, dataDir, url, port } = await startServer({ workers: 2, env: { IRIS_HELLO_TIMEOUT_MS: '400' } }));
  });
  afterAll(async () => {
    expect((await server.stop()).code).toBe(0);
    removeDir(dataDir);
  });

  it('serves /healthz, /readyz and /metrics from any worker', async () => {
    const h = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(h.status).toBe(200);
    expect(await h.json()).toMatchObject({ ok: true });
    const r = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toMatchObject({ ready: true, workers: [true, true] });
    const m = await scrape(port);
    for (const w of ['0', '1']) {
      expect(m.get(`iris_connections{worker="${w}"}`)).toBe(0);
      expect(m.has(`iris_commit_batch_size_count{worker="${w}"}`)).toBe(true);
      expect(m.has(`iris_commit_seconds_count{worker="${w}"}`)).toBe(true);
      // The start-up memory-reducing GC ran (onprem/memory.ts): gc() is reachable in a real worker.
      expect(m.get(`iris_idle_gc_total{worker="${w}"}`)).toBeGreaterThanOrEqual(1);
    }
    expect(m.get('iris_workers_ready')).toBe(2);
    const nf = await fetch(`http://127.0.0.1:${port}/nope`);
    expect(nf.status).toBe(404);
    expect(await nf.json()).toMatchObject({ error: 'not_found' });
    // A plain GET gets the upgrade's decision: the token's verdict first, then 426 for the missing upgrade.
    const plain = await fetch(`http://127.0.0.1:${port}/v1/connect`);
    expect(plain.status).toBe(401);
    expect(await plain.json()).toMatchObject({ error: 'missing_token' });
    const good = await fetch(`http://127.0.0.1:${port}/v1/connect`, { headers: { authorization: `Bearer ${await token(u!)}` } });
    expect(good.status).toBe(426);
    expect(await good.json()).toMatchObject({ error: 'upgrade_required' });
    const expired = await fetch(`http://127.0.0.1:${port}/v1/connect?access_token=${await token(u!, { expiresIn: '-2m' })}`);
    expect(expired.status).toBe(401);
    expect(await expired.json()).toMatchObject({ error: 'token_expired' });
  });

  it('refuses bad upgrades with the edge statuses', async () => {
    let r = await refused(RawClient.open(url, null));
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'missing_token' });
    r = await refused(RawClient.open(url, await token(u!, { secret: 'wrong' })));
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'invalid_signature' });
    r = await refused(RawClient.open(url, await token(u!, { expiresIn: '-2m' })));
    expect(r.status).toBe(401);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'token_expired' });
    r = await refused(RawClient.open(`${url}?user=someone-else`, await token(u!)));
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'user_mismatch' });
    r = await refused(RawClient.open(url, await token(u!), { protocols: ['chat'] }));
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body)).toMatchObject({ error: 'unsupported_protocol' });
    r = await refused(RawClient.open(url.replace('/v1/connect', '/v2/connect'), await token(u!)));
    expect(r.status).toBe(404);
    const m = await scrape(port);
    const refusedMissing = (m.get('iris_connects_refused_total{code="missing_token",worker="0"}') ?? 0) + (m.get('iris_connects_refused_total{code="missing_token",worker="1"}') ?? 0);
    expect(refusedMissing).toBeGreaterThanOrEqual(1);
  });

  it('refuses a valid token longer than MAX_TOKEN_LENGTH with 431 token_too_large, wherever it is carried', async () => {
    // Valid and signed, just large: below Node's own 16 KiB header limit, so only the shared check refuses it.
    const big = await new SignJWT({ pad: 'x'.repeat(MAX_TOKEN_LENGTH) })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(u!)
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(SECRET));
    expect(big.length).toBeGreaterThan(MAX_TOKEN_LENGTH);
    expect(big.length).toBeLessThan(12 * 1024);
    // One at a time: a refusal that settled before it was awaited would be an unhandled rejection.
    for (const open of [
      () => RawClient.open(url, big),
      () => RawClient.open(url, null, { protocols: [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + big] }),
      () => RawClient.open(`${url}?access_token=${big}`, null),
    ]) {
      const r = await refused(open());
      expect(r.status).toBe(431);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'token_too_large' });
    }
  });

  it('takes the token from the subprotocol or the query, and never echoes it', async () => {
    const t = await token(u!);
    const a = await RawClient.open(url, null, { protocols: [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + t] });
    expect(a.ws.protocol).toBe(SUBPROTOCOL);
    a.send({ t: 'hello', device: 'sp', cursor: 0 });
    expect((await a.next('welcome')).user).toBe(u);
    a.close();
    const b = await RawClient.open(`${url}?access_token=${t}`, null);
    b.send({ t: 'hello', device: 'q', cursor: 0 }, 'json');
    expect((await b.next('welcome')).user).toBe(u);
    b.close();
  });

  it('closes a connection that sends no hello (4000)', async () => {
    const c = await RawClient.open(url, await token(u!));
    const t0 = Date.now();
    const closed = await c.waitClose(5000);
    expect(closed.code).toBe(4000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('answers frame_too_large up to the transport cap, closes 1009 beyond it', async () => {
    const c = await RawClient.open(url, await token(u!));
    c.send({ t: 'hello', device: 'big', cursor: 0 });
    await c.next('welcome');
    c.ws.send(new Uint8Array(LIMITS.maxFrameBytes + 100).fill(3));
    expect((await c.next('error')).code).toBe('frame_too_large');
    c.send({ t: 'ping' });
    await c.next('pong');
    c.ws.send(new Uint8Array(LIMITS.maxFrameBytes + 64 * 1024));
    expect((await c.waitClose(5000)).code).toBe(1009);
  });
});

describe('edge: per-IP connect rate', () => {
  it('answers 429 with retry-after past the budget', async () => {
    const { server, dataDir, url } = await startServer({ workers: 1, env: { IRIS_CONNECT_RATE: '3' } });
    try {
      const [u] = usersOn(0, 1, 'rate-');
      for (let i = 0; i < 3; i++) (await RawClient.open(url, await token(u!))).close();
      const r = await refused(RawClient.open(url, await token(u!)));
      expect(r.status).toBe(429);
      expect(JSON.parse(r.body)).toMatchObject({ error: 'too_many_connects' });
    } finally {
      expect((await server.stop()).code).toBe(0);
      removeDir(dataDir);
    }
  });
});
