import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { ownerOf } from '../../onprem/owner.js';
import { Receiver, verified } from '../push-receiver.js';
import { RawClient, freePort, removeDir, startServer, tempDir, token, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * Push webhooks on-prem, black box, for what issue 12's second round added (docs/OPERATIONS.md "Push webhooks"):
 * group messages push to a member that is offline (one call per burst, conversation = the group id) and to no
 * member that is online; a push that is being retried survives a restart of the server (push_pending).
 */

const PUSH_SECRET = 'push-groups-secret';
const te = new TextEncoder();
const receiver = new Receiver();
let pushUrl = '';
const servers: { server: ServerProcess; dataDir: string }[] = [];

beforeAll(async () => {
  pushUrl = await receiver.listen();
});

afterAll(async () => {
  for (const s of servers) {
    await s.server.stop();
    removeDir(s.dataDir);
  }
  await receiver.close();
}, 60_000);

async function online(url: string, user: string, device: string): Promise<RawClient> {
  const c = await RawClient.open(url, await token(user));
  c.send({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.groups });
  await c.next('welcome');
  return c;
}

function pushEnv(url: string, over: Record<string, string> = {}): Record<string, string> {
  return { IRIS_PUSH_URL: url, IRIS_PUSH_SECRET: PUSH_SECRET, IRIS_PUSH_COALESCE_MS: '500', IRIS_PUSH_RETRY_BASE_MS: '200', ...over };
}

describe('on-prem push webhooks: groups and restarts', () => {
  it('an offline member gets one call per burst with conversation = the group id; an online member none', async () => {
    const s = await startServer({ workers: 2, env: pushEnv(pushUrl) });
    servers.push(s);
    // The group on worker 0, bob and carol on worker 1: the note crosses the links, as it would in production.
    const group = usersOn(0, 2, 'pgrp-')[0]!;
    const alice = usersOn(0, 2, 'pga-')[0]!;
    const [bob, carol] = usersOn(1, 2, 'pgb-', 2);
    expect([ownerOf(group, 2), ownerOf(bob!, 2)]).toEqual([0, 1]);
    const b = await online(s.url, bob!, 'b1');
    const c = await online(s.url, carol!, 'c1');
    const a = await online(s.url, alice, 'a1');
    a.send({ t: 'group_create', id: 'create', group, name: 'pushed', members: [bob!, carol!] });
    await a.next('group_send_ack', 10_000, (f) => f.id === 'create');
    b.close();
    // A first message, whose push shows that bob's shard told the group he is offline (the burst below then goes
    // by the group's note alone, not partly by a fan-out round that found him gone).
    a.send({ t: 'group_send', id: 'probe', group, body: te.encode('probe') });
    await waitFor('the probe push for bob', () => receiver.got.some((r) => r.payload.user === bob), 20_000);
    const start = receiver.got.length;
    for (let i = 0; i < 3; i++) a.send({ t: 'group_send', id: `m${i}`, group, body: te.encode(`group secret ${i}`) });
    for (let i = 0; i < 3; i++) await a.next('group_send_ack', 10_000, (f) => f.id === `m${i}`);
    await c.next('group_deliver', 10_000, (f) => f.entries.some((e) => e.kind === 'message' && new TextDecoder().decode(e.body) === 'group secret 2'));
    await waitFor('the group push for bob', () => receiver.got.length > start, 20_000);
    const call = receiver.got[start]!;
    expect(verified(call, PUSH_SECRET)).toBe(true);
    expect(call.payload).toMatchObject({ user: bob, device: 'b1', sender: alice, conversation: group, count: 3, group: true });
    expect(call.payload.msg).toMatch(new RegExp(`^${group}:\\d+$`));
    expect(call.body).not.toContain('group secret');
    // A positive control for "one call per burst": a 1:1 message after the window is the NEXT call for bob.
    a.send({ t: 'send', id: 'direct', to: bob!, body: te.encode('direct') });
    await a.next('send_ack', 10_000, (f) => f.id === 'direct');
    await waitFor('the 1:1 push for bob', () => receiver.got.some((r) => r.payload.conversation === alice), 20_000);
    const forBob = receiver.got.slice(start).filter((r) => r.payload.user === bob);
    expect(forBob.map((r) => [r.payload.conversation, r.payload.count])).toEqual([
      [group, 3],
      [alice, 1],
    ]);
    // carol (online) and alice (the sender) were never called.
    expect(receiver.got.filter((r) => r.payload.user === carol || r.payload.user === alice)).toEqual([]);
    a.close();
    c.close();
  }, 90_000);

  it('a push being retried when the server stops is sent after it starts again', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const env = pushEnv(pushUrl, { IRIS_PUSH_RETRY_BASE_MS: '3000' });
    const first = await startServer({ workers: 2, dataDir, port, env });
    const alice = usersOn(0, 2, 'pra-')[0]!;
    const bob = usersOn(1, 2, 'prb-')[0]!;
    const b = await online(first.url, bob, 'b1');
    b.close();
    await waitFor('b1 closed', () => b.closed !== null);
    const start = receiver.got.length;
    receiver.script.push(500, 500, 500, 500);
    const a = await online(first.url, alice, 'a1');
    a.send({ t: 'send', id: 'r1', to: bob, body: te.encode('while it fails') });
    await a.next('send_ack', 10_000, (f) => f.id === 'r1');
    await waitFor('the first call, answered 500', () => receiver.got.length > start, 20_000);
    a.close();
    expect((await first.server.stop()).code).toBe(0);
    // Stopped before its retry left: what arrives next is sent by the second server, from push_pending.
    expect(receiver.got.slice(start).map((r) => r.status)).toEqual([500]);
    // The receiver recovers while the server is down; the retry is due 1.5-3 s after the failed call.
    receiver.script.length = 0;
    const second = await startServer({ workers: 2, dataDir, port, env });
    servers.push(second);
    await waitFor('the push, after the restart', () => receiver.got.slice(start).some((r) => r.status === 200), 30_000);
    const calls = receiver.got.slice(start);
    expect(calls[0]!.status).toBe(500);
    expect(calls.at(-1)).toMatchObject({ status: 200, payload: { user: bob, device: 'b1', sender: alice, conversation: alice, msg: `${alice}:1`, count: 1 } });
  }, 90_000);
});
