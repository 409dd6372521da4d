import { afterAll, describe, expect, it } from 'vitest';
import { Receiver, verified } from '../push-receiver.js';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { RawClient, waitFor } from '../onprem/helpers.js';
import type { Target } from './suite.js';
import { startWrangler } from './wrangler-target.js';

/**
 * Push webhooks on the Cloudflare profile (wrangler dev, docs/OPERATIONS.md "Push webhooks"): the user's Durable
 * Object calls a node:http receiver on a loopback port with fetch(), from its alarm, retrying a 500. Its own
 * server, since push is configured at start-up. The on-prem twin is test/onprem/push.test.ts.
 */

const PUSH_SECRET = 'push-test-secret';
const receiver = new Receiver();
let target: Target | null = null;

afterAll(async () => {
  await target?.stop();
  await receiver.close();
}, 60_000);

async function online(t: Target, user: string, device: string, features = 0): Promise<RawClient> {
  const c = await RawClient.open(t.url, await t.token(user));
  c.send({ t: 'hello', device, cursor: 0, ...(features !== 0 && { receipts: 0, reads: 0, features }) });
  await c.next('welcome');
  return c;
}

async function connections(t: Target, user: string): Promise<number> {
  const base = t.url.replace(/^ws/, 'http').replace(/\/v1\/connect$/, '');
  const res = await fetch(`${base}/admin/v1/users/${user}/stats`, { headers: { authorization: `Bearer ${t.adminToken!}` } });
  return ((await res.json()) as { connections: number }).connections;
}

describe('cloudflare (wrangler dev): push webhooks', () => {
  it('one signed call per burst for an offline device, retried after a 500 by the alarm; nothing for an online one', async () => {
    const pushUrl = await receiver.listen();
    const t = (target = await startWrangler({
      vars: { IRIS_PUSH_URL: pushUrl, IRIS_PUSH_SECRET: PUSH_SECRET, IRIS_PUSH_COALESCE_MS: '1500', IRIS_PUSH_RETRY_BASE_MS: '200' },
    }));
    const run = `cfp${Date.now().toString(36)}`;
    const [alice, bob, dave] = [`${run}-alice`, `${run}-bob`, `${run}-dave`];
    const b = await online(t, bob, 'b1');
    b.close();
    await waitFor('bob offline', async () => (await connections(t, bob)) === 0);
    const d = await online(t, dave, 'd1');
    const a = await online(t, alice, 'a1');

    receiver.script.push(500);
    for (let i = 0; i < 5; i++) a.send({ t: 'send', id: `b${i}`, to: bob, body: new TextEncoder().encode(`secret text ${i}`) });
    a.send({ t: 'send', id: 'd0', to: dave, body: new TextEncoder().encode('hi dave') });
    for (let i = 0; i < 5; i++) await a.next('send_ack', 10_000, (f) => f.id === `b${i}`);
    await d.next('deliver');

    await waitFor('the retried push', () => receiver.got.length >= 2, 30_000);
    const [first, second] = receiver.got;
    expect(first!.status).toBe(500);
    expect(second!.status).toBe(200);
    for (const r of [first!, second!]) {
      expect(verified(r, PUSH_SECRET)).toBe(true);
      expect(r.payload).toMatchObject({ user: bob, device: 'b1', sender: alice, conversation: alice, count: 5 });
      expect(r.body).not.toContain('secret text');
    }
    expect(receiver.got.filter((r) => r.payload.user === dave)).toEqual([]);
    a.close();
    d.close();
  }, 180_000);

  it('group messages: an offline member gets one call per burst with conversation = the group id, from the GroupShard', async () => {
    const t = target!;
    const run = `cfg${Date.now().toString(36)}`;
    const [alice, bob, dave, group] = [`${run}-alice`, `${run}-bob`, `${run}-dave`, `${run}-grp`];
    const g = HELLO_FEATURES.groups;
    const b = await online(t, bob, 'b1', g);
    const d = await online(t, dave, 'd1', g);
    const a = await online(t, alice, 'a1', g);
    a.send({ t: 'group_create', id: 'create', group, name: 'pushed', members: [bob, dave] });
    await a.next('group_send_ack', 10_000, (f) => f.id === 'create');
    b.close();
    // A first message whose push shows bob's shard told the group he is offline; the burst then goes by one note.
    a.send({ t: 'group_send', id: 'probe', group, body: new TextEncoder().encode('probe') });
    await waitFor('the probe push', () => receiver.got.some((r) => r.payload.user === bob), 30_000);
    const start = receiver.got.length;
    for (let i = 0; i < 3; i++) a.send({ t: 'group_send', id: `m${i}`, group, body: new TextEncoder().encode(`group secret ${i}`) });
    for (let i = 0; i < 3; i++) await a.next('group_send_ack', 10_000, (f) => f.id === `m${i}`);
    await waitFor('the group push', () => receiver.got.length > start, 30_000);
    // The positive control for "one per burst": a 1:1 message after it is bob's next call.
    a.send({ t: 'send', id: 'direct', to: bob, body: new TextEncoder().encode('direct') });
    await a.next('send_ack', 10_000, (f) => f.id === 'direct');
    await waitFor('the 1:1 push', () => receiver.got.slice(start).some((r) => r.payload.conversation === alice), 30_000);
    const calls = receiver.got.slice(start);
    expect(calls.map((r) => [r.payload.user, r.payload.conversation, r.payload.count])).toEqual([
      [bob, group, 3],
      [bob, alice, 1],
    ]);
    expect(verified(calls[0]!, PUSH_SECRET)).toBe(true);
    expect(calls[0]!.body).not.toContain('group secret');
    expect(receiver.got.filter((r) => r.payload.user === dave || r.payload.user === alice)).toEqual([]);
    a.close();
    d.close();
  }, 180_000);

  it('a push being retried when wrangler dev restarts is sent after it comes back (push_pending, the alarm)', async () => {
    const t = target!;
    const run = `cfr${Date.now().toString(36)}`;
    const [alice, bob] = [`${run}-alice`, `${run}-bob`];
    const b = await online(t, bob, 'b1');
    b.close();
    await waitFor('bob offline', async () => (await connections(t, bob)) === 0);
    const start = receiver.got.length;
    // Every call fails until the restart (retries 0.1-0.2 s, doubling: far from the 8th attempt within a restart).
    receiver.script.push(...Array<number>(30).fill(500));
    const a = await online(t, alice, 'a1');
    a.send({ t: 'send', id: 'r1', to: bob, body: new TextEncoder().encode('while it fails') });
    await a.next('send_ack', 10_000, (f) => f.id === 'r1');
    await waitFor('a call answered 500', () => receiver.got.length > start, 30_000);
    a.close();
    await t.restart();
    const after = receiver.got.length;
    receiver.script.length = 0;
    await waitFor('the push, sent by the restarted object', () => receiver.got.slice(after).some((r) => r.status === 200), 60_000);
    const ok = receiver.got.slice(after).find((r) => r.status === 200)!;
    expect(ok.payload).toMatchObject({ user: bob, device: 'b1', sender: alice, conversation: alice, msg: `${alice}:1`, count: 1 });
    expect(receiver.got.slice(start, after).every((r) => r.status === 500)).toBe(true);
  }, 180_000);
});
