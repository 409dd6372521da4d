import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GroupEvent, GroupMessage } from '../../client/index.js';
import { P, V1Client, cbor, parseGroupPacket, v1Token } from '../v1/client.js';
import { SECRET, freePort, removeDir, scrape, sdkClient, startServer, usersOn, waitFor, type ServerProcess } from './helpers.js';

/**
 * Every v1 opcode, over both transports, on a 2-worker server (the two users of each pair are owned by different
 * workers): what is mapped works end to end, what is not gets the old protocol's error frame (0xFE), never silence.
 */
describe('v1 gateway: every opcode, TCP and WebSocket, 2 workers', () => {
  let server: ServerProcess;
  let dataDir: string;
  let port: number;
  let url: string;
  const ports = { tcp: 0, ws: 0 };
  const open: V1Client[] = [];

  async function client(transport: 'tcp' | 'ws', user?: string): Promise<V1Client> {
    const c = await V1Client.open(transport, ports[transport]);
    open.push(c);
    if (user) await c.login(user, await v1Token(user, SECRET));
    return c;
  }

  beforeAll(async () => {
    ports.tcp = await freePort();
    ports.ws = await freePort();
    ({ server, dataDir, port, url } = await startServer({ workers: 2, env: { IRIS_V1_TCP_PORT: String(ports.tcp), IRIS_V1_WS_PORT: String(ports.ws), IRIS_TYPING_TTL_MS: '5000', IRIS_RATE_PER_SEC: '1', IRIS_RATE_BURST: '40' } }));
  });

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()));
    const r = await server.stop();
    expect(r.code).toBe(0);
    removeDir(dataDir);
  });

  it('hands v1 connections to the worker that owns their user, whichever worker accepted them', async () => {
    const on0 = usersOn(0, 2, 'own-a', 4);
    const on1 = usersOn(1, 2, 'own-b', 4);
    const cs = await Promise.all([...on0, ...on1].map((u, i) => client(i % 2 === 0 ? 'tcp' : 'ws', u)));
    const m = await scrape(port);
    expect(m.get('iris_connections{worker="0"}')).toBe(4);
    expect(m.get('iris_connections{worker="1"}')).toBe(4);
    await Promise.all(cs.map((c) => c.close()));
  });

  describe.each(['tcp', 'ws'] as const)('%s', (transport) => {
    const [alice] = usersOn(0, 2, `${transport}-alice`);
    const [bob] = usersOn(1, 2, `${transport}-bob`);
    let a: V1Client;
    let b: V1Client;

    beforeAll(async () => {
      a = await client(transport, alice);
      b = await client(transport, bob);
    });

    it('0x01 LOGIN, 0x02 SEND, 0x10 RELIABLE_MSG, 0x03 ACK', async () => {
      a.write(P.send(bob!, 'hi'));
      await b.until('hi', () => b.messages().some((m) => m.body === 'hi'));
    });

    it('0x04 BATCH and 0x07 SEND_SEQ are sends, in order', async () => {
      const n = b.messages().length;
      a.write(P.batch(bob!, ['b1', 'b2', 'b3']));
      a.write(P.sendSeq(bob!, 7, 'seq7'));
      await b.until('four more', () => b.messages().length === n + 4);
      expect(b.messages().slice(n).map((m) => m.body)).toEqual(['b1', 'b2', 'b3', 'seq7']);
    });

    it('0x05 GET_STATUS -> 0x06 STATUS', async () => {
      const from = a.got.length;
      a.write(P.status(bob!));
      expect(await a.next('status', from)).toEqual({ t: 'status', user: bob, online: true, time: 0 });
    });

    it('0x70 / 0x71 TYPING -> 0x72 at the other end', async () => {
      const from = b.got.length;
      a.write(P.typingStart(bob!));
      expect(await b.next('typing', from)).toEqual({ t: 'typing', from: alice, on: true });
      const from2 = b.got.length;
      a.write(P.typingStop(bob!));
      expect(await b.next('typing', from2)).toEqual({ t: 'typing', from: alice, on: false });
    });

    it('0x74 READ_RECEIPT -> 0x75 to the sender', async () => {
      const n = b.messages().length;
      a.write(P.send(bob!, 'read me'));
      await b.until('read me', () => b.messages().length === n + 1);
      const id = b.messages().at(-1)!.id;
      const from = a.got.length;
      b.write(P.readReceipt(id, alice!));
      const r = await a.next('read', from);
      expect(r.reader).toBe(bob);
      expect(r.id).toMatch(new RegExp(`^${alice}:`));
      expect(r.ts).toBeGreaterThan(Date.now() - 60_000);
      // An id this connection was never sent.
      const e = b.got.length;
      b.write(P.readReceipt('ffffffffffffffff', alice!));
      expect((await b.next('error', e)).reason).toBe('unknown_msg_id');
    });

    it('0x23 E2EE_MSG is delivered as the 0x24 packet inside a reliable message, as the old server did', async () => {
      const n = b.messages().length;
      const header = Buffer.from([0xa1, 0x61, 0x6e, 0x01]); // CBOR {"n": 1}
      const cipher = Buffer.from('opaque ciphertext');
      a.write(P.e2ee(bob!, header, cipher));
      await b.until('the e2ee message', () => b.messages().length === n + 1);
      const body = b.got.filter((x) => x.t === 'msg').at(-1)!.body;
      expect(body.equals(P.e2eeDelivery(alice!, header, cipher))).toBe(true);
    });

    it('0x20 UPLOAD_PREKEYS and 0x21 FETCH_PREKEYS -> 0x22 on the key directory; a prekey is handed out once', async () => {
      const k = (s: string) => Buffer.from(s.padEnd(32, '.'));
      const bundle = { identity_key: k('ik'), signed_prekey: k('spk'), signed_prekey_signature: Buffer.alloc(64, 7), signed_prekey_timestamp: 1_700_000_000, one_time_prekeys: [k('otk1'), k('otk2')] };
      let from = b.got.length;
      b.write(P.uploadPrekeys(cbor(bundle)));
      expect((await b.next('prekeys', from)).map).toEqual({ status: 'ok', prekeys_remaining: 2 });
      const fetched: unknown[] = [];
      for (let i = 0; i < 3; i++) {
        from = a.got.length;
        a.write(P.fetchPrekeys(bob!));
        const m = (await a.next('prekeys', from)).map;
        expect(m['identity_key']).toEqual(k('ik'));
        expect(m['signed_prekey']).toEqual(k('spk'));
        expect(m['signed_prekey_signature']).toEqual(Buffer.alloc(64, 7));
        expect(m['signed_prekey_timestamp']).toBe(1_700_000_000);
        fetched.push(m['one_time_prekey']);
        expect(m['spk_fallback_mode']).toBe(i === 2);
      }
      // Each one-time prekey once, then none (the signed prekey alone, as the old server's fallback mode).
      expect(fetched.slice(0, 2).map((x) => String(x)).sort()).toEqual([String(k('otk1')), String(k('otk2'))].sort());
      expect(fetched[2]).toBeUndefined();
      // Nobody's keys: the old not_found; a bundle without the required keys: the old error.
      from = a.got.length;
      a.write(P.fetchPrekeys(`${transport}-nobody`));
      expect((await a.next('prekeys', from)).map).toEqual({ status: 'not_found' });
      from = a.got.length;
      a.write(P.uploadPrekeys(cbor({ identity_key: k('x') })));
      expect((await a.next('prekeys', from)).map).toEqual({ status: 'error', reason: 'missing_required_fields' });
      from = a.got.length;
      a.write(P.uploadPrekeys(Buffer.from([0xff, 0x00])));
      expect((await a.next('prekeys', from)).map).toEqual({ status: 'error', reason: 'invalid_keybundle' });
    });

    it('unmapped opcodes answer 0xFE with a reason, and the connection goes on', async () => {
      const cases: [Buffer, string][] = [
        [P.cbor(bob!, Buffer.from([0xa0])), 'unsupported'],
        [P.groupMsg('no-such-group', Buffer.from([0xa0]), Buffer.from('x')), 'not_member'],
        [P.groupMsg('no-such-group', Buffer.from([0x01]), Buffer.from('x')), 'invalid_group_header'],
        [P.groupRoster('no-such-group'), 'not_member'],
        [P.prekeyResponse(Buffer.from([0xa0])), 'server_only'],
        [P.e2eeDelivery(bob!, Buffer.from([0xa0]), Buffer.from('x')), 'server_only'],
        [P.groupJoin('g', bob!), 'server_only'],
        [P.login(alice!), 'already_logged_in'],
        // Refused by the core's own checks, under the core's code.
        [P.send('not a user id', 'x'), 'invalid_field'],
        [P.status('x'.repeat(100)), 'invalid_field'],
      ];
      for (const [packet, reason] of cases) {
        const from = a.got.length;
        a.write(packet);
        expect((await a.next('error', from)).reason).toBe(reason);
      }
      const n = b.messages().length;
      a.write(P.send(bob!, 'after the errors'));
      await b.until('still works', () => b.messages().length === n + 1);
    });

    it('a malformed packet: the old error frame, then (TCP) a close or (WebSocket) the next message; others unaffected', async () => {
      const [carol] = usersOn(0, 2, `${transport}-carol`);
      const c = await client(transport, carol);
      c.write(Buffer.from([0x42, 0, 0]));
      await c.until('error', () => c.errors().length === 1);
      expect(c.errors()).toEqual(['unknown_packet']);
      if (transport === 'tcp') await c.until('close', () => c.closed);
      else {
        // One WebSocket message is one packet: a truncated one is refused on its own.
        c.write(P.send(bob!, 'x').subarray(0, 4));
        await c.until('second error', () => c.errors().length === 2);
        expect(c.errors()[1]).toBe('incomplete_packet');
        c.write(P.send(bob!, 'carol still talks'));
        await b.until('carol', () => b.messages().some((m) => m.body === 'carol still talks'));
      }
      const n = b.messages().length;
      a.write(P.send(bob!, 'unaffected'));
      await b.until('unaffected', () => b.messages().length === n + 1);
    });
  });

  it('0xFF: sends past the user\'s rate limit are refused with RATE_LIMITED and a retry-after, not dropped silently', async () => {
    const [flood] = usersOn(0, 2, 'flood');
    const [sink] = usersOn(1, 2, 'sink');
    const f = await client('tcp', flood);
    f.write(Buffer.concat(Array.from({ length: 50 }, (_, i) => P.send(sink!, `m${i}`))));
    await f.until('refusals', () => f.got.filter((x) => x.t === 'rate_limited').length === 10);
    const r = f.got.find((x) => x.t === 'rate_limited');
    expect(r).toMatchObject({ t: 'rate_limited' });
    expect((r as { retryAfter: number }).retryAfter).toBeGreaterThan(0);
    // The 40 the bucket held were accepted, in order.
    const s = await client('ws', sink);
    await s.until('forty messages', () => s.messages().length === 40);
    expect(s.messages().map((m) => m.body)).toEqual(Array.from({ length: 40 }, (_, i) => `m${i}`));
  });

  it('groups: 0x30 create -> 0x31, a group of this Iris with v1 and SDK members, 0x33 / 0x36 both ways, 0x35 roster, 0x32 leave', async () => {
    const [gAlice] = usersOn(0, 2, 'g-alice');
    const [gBob] = usersOn(1, 2, 'g-bob');
    const [gSam] = usersOn(1, 2, 'g-sam');
    const a = await client('tcp', gAlice);
    const b = await client('ws', gBob);
    // A v1 GROUP_CREATE: the old answer, GROUP_JOIN of the creator to a group named by the server.
    a.write(P.groupCreate('mine'));
    const own = await a.next('group_join');
    expect(own.user).toBe(gAlice);
    expect(own.group).toMatch(/^v1g-/);
    // A group made by an SDK user with both v1 users in it.
    const sam = sdkClient(url, gSam!, 'phone');
    const atSam: (GroupMessage | GroupEvent)[] = [];
    sam.on('groupMessage', (m) => void atSam.push(m));
    await sam.connect();
    const { group } = await sam.createGroup('team', [gAlice!, gBob!]);
    await b.until('join notifications', () => b.got.some((x) => x.t === 'group_join' && x.group === group && x.user === gBob));
    await sam.sendToGroup(group, 'hello v1');
    for (const c of [a, b]) {
      await c.until('the SDK group message', () => c.got.some((x) => x.t === 'msg' && x.body[0] === 0x33));
      const m = parseGroupPacket(c.got.filter((x) => x.t === 'msg').map((x) => (x as { body: Buffer }).body).find((x) => x[0] === 0x33)!);
      expect(m).toEqual({ op: 0x33, group, header: { sender: gSam }, data: Buffer.from('hello v1') });
    }
    // A v1 member's 0x33: the others get it as the old server delivered it (sender in the header).
    const n = a.messages().length;
    b.write(P.groupMsg(group, cbor({ n: 1 }), Buffer.from('from bob')));
    await a.until('bob\'s group message', () => a.messages().length === n + 1);
    expect(parseGroupPacket(a.got.filter((x) => x.t === 'msg').at(-1)!.body as Buffer)).toEqual({ op: 0x33, group, header: { n: 1, sender: gBob }, data: Buffer.from('from bob') });
    await waitFor('sam gets it', () => atSam.some((m) => 'body' in m && m.body[0] === 0x33 && m.from === gBob));
    b.write(P.senderKey(group, Buffer.from('sender-key')));
    await a.until('the sender key', () => a.messages().length === n + 2);
    expect(parseGroupPacket(a.got.filter((x) => x.t === 'msg').at(-1)!.body as Buffer)).toEqual({ op: 0x36, group, data: Buffer.from('sender-key') });
    b.write(P.groupRoster(group));
    const roster = await b.next('roster');
    expect(roster.group).toBe(group);
    expect([...(roster.members as string[])].sort()).toEqual([gAlice, gBob, gSam].sort());
    b.write(P.groupLeave(group));
    await b.next('group_left');
    const e = b.got.length;
    b.write(P.groupMsg(group, cbor({}), Buffer.from('gone')));
    expect((await b.next('error', e)).reason).toBe('not_member');
    // Every group delivery was acked within what was sent: no error but the one asked for.
    expect(b.errors()).toEqual(['not_member']);
    expect(a.errors()).toEqual([]);
    await sam.close();
  });

  it('a v1 WebSocket message may hold a LOGIN and the packets behind it', async () => {
    const [erin] = usersOn(1, 2, 'ws-erin');
    const [frank] = usersOn(0, 2, 'ws-frank');
    const f = await client('tcp', frank);
    const e = await client('ws');
    e.write(Buffer.concat([P.login(erin!, await v1Token(erin!, SECRET)), P.send(frank!, 'behind the login')]));
    await e.next('login_ok');
    await f.until('the message', () => f.messages().some((m) => m.body === 'behind the login'));
  });
});
