import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IrisError, MemoryStore, type GroupEvent, type GroupMessage, type IrisClient } from '../../client/index.js';
import { removeDir, sdkClient, startServer, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * Groups through the SDK (client/groups.ts) against the on-prem server, across two workers: typed methods, the
 * groupMessage / groupEvent events, the per-group cursor in the store (a reconnect and a restarted client on the
 * same store hand nothing out twice), and typed refusals.
 */
describe('groups through the SDK', () => {
  let server: ServerProcess;
  let dataDir: string;
  let url: string;
  const clients: IrisClient[] = [];
  const [alice] = usersOn(0, 2, 'sdka-');
  const [bob, eve] = usersOn(1, 2, 'sdkb-', 2);

  beforeAll(async () => {
    ({ server, dataDir, url } = await startServer({ workers: 2 }));
  });

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('create, send, roster, events in order, once per device across a restart of the client', async () => {
    const a = sdkClient(url, alice!);
    const bobStore = new MemoryStore();
    let b = sdkClient(url, bob!, 'd1', { store: bobStore });
    const e = sdkClient(url, eve!);
    clients.push(a, b, e);
    await Promise.all([a.connect(), b.connect(), e.connect()]);
    const atBob: (GroupMessage | GroupEvent)[] = [];
    const listen = (c: IrisClient) => {
      c.on('groupMessage', (m) => void atBob.push(m));
      c.on('groupEvent', (ev) => void atBob.push(ev));
    };
    listen(b);
    const created = await a.createGroup('team', [bob!]);
    const group = created.group;
    for (let i = 0; i < 20; i++) await a.sendToGroup(group, `hello ${i}`);
    const again = await a.sendToGroup(group, 'once', { id: 'fixed-id' });
    const retry = await a.sendToGroup(group, 'once', { id: 'fixed-id' });
    expect(retry).toMatchObject({ seq: again.seq, dup: true });
    await waitFor('bob has everything', () => atBob.filter((x) => 'text' in x).length === 21);
    expect(atBob.slice(0, 2).map((x) => ('kind' in x ? x.kind : 'message'))).toEqual(['create', 'join']);
    expect(atBob.filter((x): x is GroupMessage => 'text' in x).map((m) => m.text())).toEqual([...Array.from({ length: 20 }, (_, i) => `hello ${i}`), 'once']);
    const roster = await b.roster(group);
    expect(roster.members.map((m) => `${m.user}:${m.admin}`).sort()).toEqual([`${alice}:true`, `${bob}:false`].sort());
    // A non-member: typed refusals, nothing learnt.
    await expect(e.sendToGroup(group, 'x')).rejects.toMatchObject({ code: 'not_member' });
    await expect(e.roster(group)).rejects.toBeInstanceOf(IrisError);
    // Bob's client restarts on the same store: nothing is handed out again; new entries continue.
    await b.close();
    b = sdkClient(url, bob!, 'd1', { store: bobStore });
    clients.push(b);
    listen(b);
    await b.connect();
    await a.sendToGroup(group, 'after restart');
    await waitFor('bob gets the new one', () => atBob.some((x) => 'text' in x && x.text() === 'after restart'));
    // Bob reads up to `again`: alice, its sender, learns it (coalesced: within about a second).
    b.markGroupRead(group, again.seq);
    let state = '';
    await waitFor('alice sees bob read it', async () => {
      state = (await a.groupReceipts(group, again.seq)).members.find((m) => m.user === bob)?.state ?? '';
      return state === 'read';
    });
    await expect(b.groupReceipts(group, again.seq)).rejects.toMatchObject({ code: 'bad_state' });
    const seqs = atBob.map((x) => x.seq);
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(b.groupCursor(group)).toBe(Math.max(...seqs));
  });

  it('a group send the server never answered is in the store, and a restarted client sends it (same id, once)', async () => {
    const aliceStore = new MemoryStore();
    const a = sdkClient(url, alice!, 'd2', { store: aliceStore });
    clients.push(a);
    await a.connect();
    const { group } = await a.createGroup('store', [bob!]);
    // Closed before it could go out: it stays in the store (the promise rejects with closed).
    const lost = a.sendToGroup(group, 'kept', { id: 'kept-1' }).catch((e: unknown) => e);
    await a.close();
    expect(await lost).toMatchObject({ code: 'closed' });
    const pending = aliceStore.load().groupOutbox ?? [];
    expect(pending.map((p) => p.id)).toContain('kept-1');
    const again = sdkClient(url, alice!, 'd2', { store: aliceStore });
    clients.push(again);
    const acks: { id: string; seq: number }[] = [];
    again.on('groupAck', (x) => void acks.push(x));
    const texts: string[] = [];
    again.on('groupMessage', (m) => void texts.push(m.text()));
    await again.connect();
    await waitFor('the restarted client sends it', () => acks.some((x) => x.id === 'kept-1'));
    await waitFor('and gets it back once', () => texts.filter((t) => t === 'kept').length === 1);
    expect(aliceStore.load().groupOutbox ?? []).toEqual([]);
  });

  it('references and typing in a group through the SDK: groupReply / groupEdit / groupReact arrive with ref; a member typing reaches the others', async () => {
    const a = sdkClient(url, alice!, 'refs');
    const b = sdkClient(url, bob!, 'refs');
    clients.push(a, b);
    await Promise.all([a.connect(), b.connect()]);
    const atBob: GroupMessage[] = [];
    const typing: { conv: string; from: string; on: boolean }[] = [];
    b.on('groupMessage', (m) => void atBob.push(m));
    b.on('typing', (t) => void typing.push(t));
    const { group } = await a.createGroup('refs', [bob!]);
    const m = await a.sendToGroup(group, 'hello');
    await b.groupReply(group, m.seq, 're');
    await b.groupReact(group, m.seq, '+1');
    await a.groupEdit(group, m.seq, 'hello!');
    await expect(b.groupDelete(group, m.seq)).rejects.toMatchObject({ code: 'ref_not_allowed' });
    await waitFor('bob has the edit', () => atBob.some((x) => x.ref?.kind === 'edit'));
    expect(atBob.filter((x) => x.ref).map((x) => [x.from, x.ref!.kind, x.ref!.msg])).toEqual([
      [bob, 'reply', String(m.seq)],
      [bob, 'react', String(m.seq)],
      [alice, 'edit', String(m.seq)],
    ]);
    a.typing(group);
    await waitFor('bob sees alice typing in the group', () => typing.some((t) => t.conv === group && t.from === alice && t.on));
  });
});
