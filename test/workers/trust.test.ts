import { SELF, env, evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../core/config.js';
import type { Attachment } from '../../durable-objects/conn.js';
import { CLOSE_CODES } from '../../protocol/index.js';
import { TestClient, token, upgradeRequest, userShard } from './helpers.js';

/**
 * Revocation and the expiry close where the Durable Object matters: the shard refuses a revoked token before a
 * socket exists, closes a live one when the revocation reaches it, and its alarm — armed at the upgrade for the
 * token's expiry — wakes a hibernated object to close an expired connection (4006). No test waits on the clock:
 * a token's exp is moved into the past in the attachment, the object evicted (as after hibernation) and the alarm
 * run by the test.
 */

const GRACE_MS = DEFAULT_CONFIG.tokenExpiryGraceS * 1000;

describe('token revocation in the user shard', () => {
  it('a revocation closes the live connection (4005) and the token is refused at the next upgrade', async () => {
    const t = await token('tr-a', { claims: { jti: 'tr-a-1' } });
    const res = await upgradeRequest({ Authorization: `Bearer ${t}` });
    expect(res.status).toBe(101);
    res.webSocket!.accept();
    const closed = new Promise<number>((r) => res.webSocket!.addEventListener('close', (ev) => r(ev.code)));
    const answer = await userShard(env, 'tr-a').admin({ op: 'revoke', user: 'tr-a', jti: 'tr-a-1', exp: Math.floor(Date.now() / 1000) + 3600 });
    expect(answer).toMatchObject({ status: 200, body: { closed: 1 } });
    expect(await closed).toBe(CLOSE_CODES.token_revoked);
    const again = await upgradeRequest({ Authorization: `Bearer ${t}` });
    expect(again.status).toBe(401);
    expect(await again.json()).toMatchObject({ error: 'token_revoked' });
    // Survives eviction: it is stored, not remembered.
    await evictDurableObject(userShard(env, 'tr-a'));
    expect((await upgradeRequest({ Authorization: `Bearer ${t}` })).status).toBe(401);
    expect((await upgradeRequest({ Authorization: `Bearer ${await token('tr-a', { claims: { jti: 'tr-a-2' } })}` })).status).toBe(101);
  });

  it('the admin API is off without IRIS_ADMIN_SECRET (403), before anything else is looked at', async () => {
    const r = await SELF.fetch('http://iris.test/admin/v1/users/alice/stats', { headers: { authorization: 'Bearer anything' } });
    expect(r.status).toBe(403);
    expect(await r.json()).toMatchObject({ error: 'admin_disabled' });
  });
});

describe('token expiry close', () => {
  it('the upgrade arms the alarm for exp + grace, and the alarm wakes a hibernated shard to close with 4006', async () => {
    const stub = userShard(env, 'tr-exp');
    const c = await TestClient.connect('tr-exp', 'd1');
    const armed = await runInDurableObject(stub, async (_i, state) => ({
      alarm: await state.storage.getAlarm(),
      exp: state.getWebSockets().map((ws) => (ws.deserializeAttachment() as Attachment).tok?.exp),
    }));
    expect(armed.exp[0]).toBeGreaterThan(Date.now() / 1000);
    expect(armed.alarm!).toBeLessThanOrEqual(armed.exp[0]! * 1000 + GRACE_MS);

    // Before the deadline the alarm closes nothing.
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    c.send({ t: 'ping' });
    await c.waitFor(() => c.of('pong').length > 0 || c.closed !== null);
    expect(c.closed).toBeNull();

    // The token "expired" more than the grace ago; evicted, so only the attachment knows.
    await runInDurableObject(stub, (_i, state) => {
      for (const ws of state.getWebSockets()) {
        const att = ws.deserializeAttachment() as Attachment;
        ws.serializeAttachment({ ...att, tok: { ...att.tok, exp: Math.floor((Date.now() - GRACE_MS) / 1000) - 1 } });
      }
    });
    await evictDurableObject(stub);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    await c.waitFor(() => c.closed !== null);
    expect(c.closed?.code).toBe(CLOSE_CODES.token_expired);
  });
});
