import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HELLO_FEATURES, type GroupEntry } from '../../protocol/index.js';
import { ownerOf } from '../../onprem/owner.js';
import { RawClient, removeDir, startServer, token, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * Groups across workers (issue 10): the group owned by worker 0, members on both workers, so the group's calls,
 * its pushes (one link message per worker) and its membership news cross the process boundary (links.ts op 10).
 */

const te = new TextEncoder();
const td = new TextDecoder();

/** A device that acknowledges what it gets and keeps the entries it processed, once each (as the SDK does). */
class Device {
  readonly seen: GroupEntry[] = [];
  private taken = 0;
  private constructor(readonly c: RawClient) {}

  static async open(url: string, user: string, device = 'd'): Promise<Device> {
    const c = await RawClient.open(url, await token(user));
    c.send({ t: 'hello', device, cursor: 0, receipts: 0, reads: 0, features: HELLO_FEATURES.groups });
    await c.next('welcome');
    return new Device(c);
  }

  /** Processes the group_deliver frames that arrived since last time and acknowledges them. */
  take(): number {
    const frames = this.c.frames.filter((f) => f.t === 'group_deliver').slice(this.taken);
    this.taken += frames.length;
    for (const f of frames) {
      if (f.t !== 'group_deliver' || f.entries.length === 0) continue;
      for (const e of f.entries) if (e.seq > (this.seen.at(-1)?.seq ?? 0)) this.seen.push(e);
      this.c.send({ t: 'group_ack', group: f.group, seq: f.entries.at(-1)!.seq });
    }
    return frames.length;
  }

  messages(): string[] {
    return this.seen.filter((e) => e.kind === 'message').map((e) => td.decode(e.body));
  }
}

describe('groups across two workers', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  const devices: Device[] = [];
  const [alice, dave] = usersOn(0, 2, 'galice-', 2);
  const [bob, carol] = usersOn(1, 2, 'gbob-', 2);
  const group = usersOn(0, 2, 'grp-')[0]!;
  const eve = usersOn(1, 2, 'geve-')[0]!;

  beforeAll(async () => {
    ({ server, dataDir, url } = await startServer({ workers: 2 }));
  });

  afterAll(async () => {
    for (const d of devices) d.c.close();
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('members on both workers see one order; an offline member catches up; a removed one gets nothing after', async () => {
    expect([ownerOf(group, 2), ownerOf(alice!, 2), ownerOf(bob!, 2)]).toEqual([0, 0, 1]);
    const a = await Device.open(url, alice!);
    const b = await Device.open(url, bob!);
    const c = await Device.open(url, carol!);
    devices.push(a, b, c);
    a.c.send({ t: 'group_create', id: 'create', group, name: 'cross', members: [bob!, carol!, dave!] });
    await a.c.next('group_send_ack', 10_000, (f) => f.id === 'create');
    const senders = [a, b, c];
    for (let i = 0; i < 30; i++) senders[i % 3]!.c.send({ t: 'group_send', id: `m${i}`, group, body: te.encode(`m${i}`) });
    await waitFor('every member has the 30 messages', () => senders.every((d) => (d.take(), d.messages().length === 30)));
    const order = a.seen.map((e) => e.seq);
    for (const d of senders) expect(d.seen.map((e) => `${e.seq}:${e.kind}:${td.decode(e.body)}`)).toEqual(a.seen.map((e) => `${e.seq}:${e.kind}:${td.decode(e.body)}`));
    // Removal mid-stream: carol (worker 1) gets her removal entry and nothing after it.
    a.c.send({ t: 'group_remove', id: 'rm', group, member: carol! });
    const rm = await a.c.next('group_send_ack', 10_000, (f) => f.id === 'rm');
    for (let i = 30; i < 40; i++) b.c.send({ t: 'group_send', id: `m${i}`, group, body: te.encode(`m${i}`) });
    await waitFor('bob and alice have 40', () => [a, b].every((d) => (d.take(), d.messages().length === 40)));
    await waitFor('carol has her removal', () => (c.take(), c.seen.some((e) => e.kind === 'leave' && e.subject === carol)));
    c.take();
    expect(c.seen.at(-1)!.seq).toBe(rm.seq);
    expect(c.messages()).toHaveLength(30);
    // Dave (worker 0) was offline for all of it: he catches up, everything of his range, once.
    const d = await Device.open(url, dave!);
    devices.push(d);
    await waitFor('dave catches up', () => (d.take(), d.messages().length === 40));
    expect(d.seen.map((e) => e.seq)).toEqual(a.seen.map((e) => e.seq));
    expect(order.length).toBeGreaterThan(30);
  });

  it('a non-member (on the other worker) is refused and learns nothing', async () => {
    const e = await Device.open(url, eve);
    devices.push(e);
    e.c.send({ t: 'group_send', id: 'x', group, body: te.encode('let me in') });
    e.c.send({ t: 'group_roster_query', ref: 'r', group });
    const errs = [await e.c.next('error', 10_000, (f) => f.ref === 'x'), await e.c.next('error', 10_000, (f) => f.ref === 'r')];
    expect(errs.map((f) => f.code)).toEqual(['not_member', 'not_member']);
    expect(e.c.frames.filter((f) => f.t === 'group_deliver' || f.t === 'group_roster')).toEqual([]);
  });

  it('the sender\'s other device gets its message; a retried send gets the same seq', async () => {
    const a2 = await Device.open(url, alice!, 'laptop');
    devices.push(a2);
    await waitFor('the laptop catches up', () => (a2.take(), a2.messages().length === 40));
    const a = devices[0]!;
    a.c.send({ t: 'group_send', id: 'twice', group, body: te.encode('twice') });
    a.c.send({ t: 'group_send', id: 'twice', group, body: te.encode('twice') });
    await waitFor('two acks', () => a.c.frames.filter((f) => f.t === 'group_send_ack' && f.id === 'twice').length === 2);
    const acks = a.c.frames.filter((f) => f.t === 'group_send_ack' && f.id === 'twice');
    expect(acks.map((f) => f.t === 'group_send_ack' && [f.seq, f.dup])).toEqual([
      [(acks[0] as { seq: number }).seq, false],
      [(acks[0] as { seq: number }).seq, true],
    ]);
    await waitFor('the laptop gets it once', () => (a2.take(), a2.messages().filter((m) => m === 'twice').length === 1));
  });
});
