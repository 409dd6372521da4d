import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IrisClient, MemoryStore, type PendingSend, type StoredEntry } from '../../client/index.js';
import { FileStore } from '../../client/node-store.js';

/** Message references in the SDK's stores (PROTOCOL.md 9.9): a pending send and a handed-out entry keep their ref. */

const dir = mkdtempSync(join(tmpdir(), 'iris-refs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pending: PendingSend = { id: 'm1', to: 'bob', body: new TextEncoder().encode('👍'), createdAt: 1, ref: { kind: 'react', msg: 'bob:3' } };
const entry: StoredEntry = { seq: 4, kind: 'message', msg: 'bob:9', peer: 'bob', ts: 5, body: new Uint8Array(0), ref: { kind: 'delete', msg: 'bob:8' } };
const plain: StoredEntry = { seq: 5, kind: 'message', msg: 'bob:10', peer: 'bob', ts: 6, body: new Uint8Array([1]) };

describe('client stores keep message references', () => {
  it('FileStore, across instances', () => {
    const path = join(dir, 'refs.json');
    const a = new FileStore(path);
    a.putPending(pending);
    a.handOut([entry, plain], 5);
    const st = new FileStore(path).load();
    expect(st.outbox).toEqual([pending]);
    expect(st.unhandled).toEqual([entry, plain]);
    expect('ref' in st.unhandled[1]!).toBe(false);
  });

  it('MemoryStore', () => {
    const s = new MemoryStore();
    s.putPending(pending);
    s.handOut([entry], 4);
    expect(s.load()).toMatchObject({ outbox: [pending], unhandled: [entry] });
  });

  it('a recovered entry comes back with its ref', async () => {
    const store = new MemoryStore({ cursor: 4, unhandled: [entry] });
    const c = new IrisClient({ url: 'ws://127.0.0.1:9/v1/connect', token: 't', device: 'd1', store, probeRefusals: false, reconnect: { baseMs: 60_000, maxMs: 60_000 } });
    const got = new Promise((resolve) => c.on('recovered', (r) => resolve(r)));
    c.connect().catch(() => {});
    expect(await got).toMatchObject({ kind: 'message', message: { msg: 'bob:9', ref: { kind: 'delete', msg: 'bob:8' } } });
    await c.close();
  });

  it('refuses a malformed reference before it is stored', async () => {
    const c = new IrisClient({ url: 'ws://127.0.0.1:9/v1/connect', token: 't', device: 'd1', store: new MemoryStore() });
    await expect(c.send('bob', 'x', { ref: { kind: 'like' as 'react', msg: 'bob:1' } })).rejects.toMatchObject({ code: 'invalid_field' });
    await expect(c.reply('bob', '', 'x')).rejects.toMatchObject({ code: 'invalid_field' });
  });
});
