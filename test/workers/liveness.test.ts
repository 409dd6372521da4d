import { env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { CLOSE_CODES } from '../../protocol/index.js';
import { describe, expect, it } from 'vitest';
import type { Attachment } from '../../durable-objects/conn.js';
import { DEFAULT_CONFIG } from '../../core/config.js';
import { PING_TEXT, PONG_TEXT } from '../../protocol/index.js';
import { TestClient, userShard } from './helpers.js';

/**
 * Liveness on Cloudflare (issue 7, findings 4 and 12; issue 9: the same hello timeout as on-prem): the hello
 * timeout and the idle timeout, both enforced by the shard's alarm. No test waits on the clock: both timeouts are
 * far longer than a test (IRIS_HELLO_TIMEOUT_MS is 10 minutes in vitest.config.ts, the idle timeout 2 x 30 s), a
 * test makes a socket look old by moving its recorded times back, evicts the object (so it re-reads the
 * attachment, as after hibernation) and runs the alarm itself.
 */

const IDLE_MS = 2 * DEFAULT_CONFIG.pingMs;
/** vitest.config.ts sets it far beyond a test's length, so only runDurableObjectAlarm ever runs the sweep. */
const HELLO_MS = Number(env['IRIS_HELLO_TIMEOUT_MS']);

/** Moves every socket's recorded activity of a user's shard `ms` into the past, then evicts the object. */
async function backdate(user: string, ms: number): Promise<void> {
  await runInDurableObject(userShard(env, user), (_i, state) => {
    for (const ws of state.getWebSockets()) {
      const att = ws.deserializeAttachment() as Attachment;
      ws.serializeAttachment({ ...att, opened: att.opened - ms, active: att.active - ms });
    }
  });
  await evictDurableObject(userShard(env, user));
}

async function presenceOf(asker: TestClient, user: string, ref: string) {
  asker.send({ t: 'presence_query', ref, users: [user] });
  await asker.waitFor(() => asker.of('presence').some((p) => p.ref === ref));
  return asker.of('presence').find((p) => p.ref === ref)!.users[0]!;
}

/** Waits for the next pong or close: frames are ordered, so a pong proves no close was sent before it. */
async function roundTrip(c: TestClient): Promise<void> {
  const pongs = c.of('pong').length;
  c.send({ t: 'ping' });
  await c.waitFor(() => c.of('pong').length > pongs || c.closed !== null);
}

describe('hello timeout', () => {
  it('one alarm, armed at the upgrade, closes sockets that never sent hello with 4000 — after hibernation too', async () => {
    const stub = userShard(env, 't-nohello');
    const idle = await Promise.all(Array.from({ length: 3 }, () => TestClient.open('t-nohello')));
    const armed = await runInDurableObject(stub, async (_i, state) => ({
      alarm: await state.storage.getAlarm(),
      opened: state.getWebSockets().map((ws) => (ws.deserializeAttachment() as Attachment).opened),
    }));
    // The deadline is the object's alarm (no timer per socket keeps it awake), due by the first socket's deadline.
    expect(armed.opened).toHaveLength(3);
    expect(armed.alarm).not.toBeNull();
    expect(armed.alarm!).toBeLessThanOrEqual(Math.min(...armed.opened) + HELLO_MS);

    // Before the deadline the alarm closes nothing (a ping before hello is answered and changes nothing).
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    for (const c of idle) await roundTrip(c);
    expect(idle.map((c) => c.closed)).toEqual([null, null, null]);

    // Past it — and evicted, as after hibernation, so the deadline comes from the attachments alone.
    await backdate('t-nohello', HELLO_MS + 1_000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    for (const c of idle) await c.waitFor(() => c.closed !== null);
    expect(idle.map((c) => c.closed?.code)).toEqual([4000, 4000, 4000]);
    const left = await runInDurableObject(stub, async (_i, state) => ({ sockets: state.getWebSockets().length, alarm: await state.storage.getAlarm() }));
    // Nothing left to watch: the object does not wake again for these sockets.
    expect(left).toEqual({ sockets: 0, alarm: null });
  });

  it('leaves a connection that sent hello open past the hello timeout', async () => {
    const a = await TestClient.connect('t-hello', 'a1');
    // The hello deadline's alarm: run it now instead of waiting for it.
    expect(await runDurableObjectAlarm(userShard(env, 't-hello'))).toBe(true);
    await roundTrip(a);
    expect(a.closed).toBeNull();
    a.close();
  });
});

describe('idle timeout (a silently dead client)', () => {
  it('closes a socket that sent nothing for 2 x IRIS_WS_PING_MS with 4004 idle_timeout, and presence says offline', async () => {
    const a = await TestClient.connect('i-alice', 'a1');
    const b = await TestClient.connect('i-bob', 'b1');
    expect(await presenceOf(b, 'i-alice', 'q1')).toMatchObject({ online: true });

    await backdate('i-alice', IDLE_MS + 1_000);
    const before = Date.now();
    expect(await runDurableObjectAlarm(userShard(env, 'i-alice'))).toBe(true);
    await a.waitFor(() => a.closed !== null);
    expect(a.closed?.code).toBe(CLOSE_CODES.idle_timeout);

    const p = await presenceOf(b, 'i-alice', 'q2');
    expect(p.online).toBe(false);
    expect(p.lastSeen).toBeGreaterThanOrEqual(before);
    b.close();
  });

  it('keeps a socket whose only traffic is the auto-answered heartbeat, and re-arms the alarm', async () => {
    const a = await TestClient.connect('k-alice', 'a1');
    const pong = new Promise<string>((r) => a.ws.addEventListener('message', (e) => typeof e.data === 'string' && r(e.data)));
    a.ws.send(PING_TEXT);
    expect(await pong).toBe(PONG_TEXT);

    // Its last frame (the hello) is "61 s old"; only the runtime-answered ping says it is alive.
    await backdate('k-alice', IDLE_MS + 1_000);
    expect(await runDurableObjectAlarm(userShard(env, 'k-alice'))).toBe(true);
    await roundTrip(a);
    expect(a.closed).toBeNull();
    const alarm = await runInDurableObject(userShard(env, 'k-alice'), (_i, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();
    a.close();
  });

  it('a frame other than the heartbeat also counts as life', async () => {
    const a = await TestClient.connect('f-alice', 'a1');
    await backdate('f-alice', IDLE_MS + 1_000);
    await roundTrip(a); // a binary ping reaches the shard and refreshes the socket's activity
    expect(await runDurableObjectAlarm(userShard(env, 'f-alice'))).toBe(true);
    await roundTrip(a);
    expect(a.closed).toBeNull();
    a.close();
  });

  it('stops re-arming once no socket is open', async () => {
    const a = await TestClient.connect('s-alice', 'a1');
    a.close();
    await a.waitFor(() => a.closed !== null);
    const stub = userShard(env, 's-alice');
    // Wait until the shard has processed the close (the socket is gone from its list).
    await expect.poll(() => runInDurableObject(stub, (_i, state) => state.getWebSockets().length)).toBe(0);
    await runDurableObjectAlarm(stub);
    expect(await runInDurableObject(stub, (_i, state) => state.storage.getAlarm())).toBeNull();
  });
});
