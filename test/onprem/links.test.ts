import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LinkClient, LinkError, LinkServer } from '../../onprem/links.js';
import type { PresenceInfo } from '../../protocol/index.js';

/**
 * The link codec for presence (onprem/links.ts): presence with its asker, watch and push cross the unix socket
 * with every field intact, and a handler's failure comes back as a LinkError.
 */
describe('links: presence ops', () => {
  const dir = mkdtempSync(join(tmpdir(), 'iris-links-'));
  const calls: unknown[] = [];
  const server = new LinkServer(join(dir, 'peer-0.sock'), {
    forward: () => Promise.reject(new Error('not used')),
    presence: async (user, asker) => {
      calls.push(['presence', user, asker]);
      return { user, online: false, lastSeen: asker === 'friend' ? 1_767_225_609_000 : 0 };
    },
    watch: async (subject, watcher, on) => {
      calls.push(['watch', subject, watcher, on]);
      if (subject === 'broken') throw new Error('shard failed');
      return on && watcher !== 'stranger' ? { user: subject, online: true, lastSeen: 2 ** 52 } : undefined;
    },
    presenceChanged: async (watcher, info: PresenceInfo) => {
      calls.push(['push', watcher, info]);
      return watcher === 'online-user';
    },
    typing: async (to, from, conv, on) => {
      calls.push(['typing', to, from, conv, on]);
      if (to === 'broken') throw new Error('shard failed');
      return to === 'online-user';
    },
    fetchKeys: async (owner, requester) => {
      calls.push(['keys', owner, requester]);
      if (owner === 'broken') throw new Error('shard failed');
      return owner === 'nobody' ? [] : [{ device: 'd1', identity: new Uint8Array([1, 2]), signed: { id: 7, key: new Uint8Array([3]), sig: new Uint8Array([4]), ts: 2 ** 52 }, lastResort: { id: 9, key: new Uint8Array(1569).fill(5), sig: new Uint8Array([6]) }, prekey: { id: 2 ** 31, key: new Uint8Array([7]) } }];
    },
    keyDevices: async (owner) => (owner === 'broken' ? Promise.reject(new Error('shard failed')) : ['d1', 'd2']),
  });
  const client = new LinkClient(0, server.path, 5_000);

  afterAll(() => {
    client.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('carries presence (with its asker), watch on/off and hidden answers, and push results', async () => {
    await server.listen();
    expect(await client.presence('bob', 'friend')).toEqual({ user: 'bob', online: false, lastSeen: 1_767_225_609_000 });
    expect(await client.watch('bob', 'alice', true)).toEqual({ user: 'bob', online: true, lastSeen: 2 ** 52 });
    expect(await client.watch('bob', 'stranger', true)).toBeUndefined();
    expect(await client.watch('bob', 'alice', false)).toBeUndefined();
    const info = { user: 'bob', online: false, lastSeen: 1_767_225_609_000 };
    expect(await client.presenceChanged('online-user', info)).toBe(true);
    expect(await client.presenceChanged('gone-user', info)).toBe(false);
    await expect(client.watch('broken', 'alice', true)).rejects.toBeInstanceOf(LinkError);
    expect(calls).toEqual([
      ['presence', 'bob', 'friend'],
      ['watch', 'bob', 'alice', true],
      ['watch', 'bob', 'stranger', true],
      ['watch', 'bob', 'alice', false],
      ['push', 'online-user', info],
      ['push', 'gone-user', info],
      ['watch', 'broken', 'alice', true],
    ]);
  });

  it('carries key bundles (every key, byte for byte) and device lists, and their failures', async () => {
    calls.length = 0;
    const [e] = await client.fetchKeys('alice', 'bob');
    expect(e).toEqual({ device: 'd1', identity: new Uint8Array([1, 2]), signed: { id: 7, key: new Uint8Array([3]), sig: new Uint8Array([4]), ts: 2 ** 52 }, lastResort: { id: 9, key: new Uint8Array(1569).fill(5), sig: new Uint8Array([6]) }, prekey: { id: 2 ** 31, key: new Uint8Array([7]) } });
    expect(await client.fetchKeys('nobody', 'bob')).toEqual([]);
    await expect(client.fetchKeys('broken', 'bob')).rejects.toBeInstanceOf(LinkError);
    expect(await client.keyDevices('alice')).toEqual(['d1', 'd2']);
    await expect(client.keyDevices('broken')).rejects.toBeInstanceOf(LinkError);
    expect(calls).toEqual([['keys', 'alice', 'bob'], ['keys', 'nobody', 'bob'], ['keys', 'broken', 'bob']]);
  });

  it('carries typing pushes and their online answer', async () => {
    calls.length = 0;
    expect(await client.typing('online-user', 'alice', 'alice', true)).toBe(true);
    expect(await client.typing('gone-user', 'alice', 'grp.1', false)).toBe(false);
    await expect(client.typing('broken', 'alice', 'alice', true)).rejects.toBeInstanceOf(LinkError);
    expect(calls).toEqual([
      ['typing', 'online-user', 'alice', 'alice', true],
      ['typing', 'gone-user', 'alice', 'grp.1', false],
      ['typing', 'broken', 'alice', 'alice', true],
    ]);
  });
});
