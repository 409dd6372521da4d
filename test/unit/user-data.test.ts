import { describe, expect, it } from 'vitest';
import { runAdmin } from '../../core/admin.js';
import { USER_DATA_PARTS, eraseUser, exportUser } from '../../core/user-data.js';
import { World } from './core-harness.js';

/** The admin API's erase and export (core/user-data.ts): every table of a user, and only the user's rows. */

describe('user data parts', () => {
  it('every table with a user column is in a part (a new feature table must join erase and export)', () => {
    const w = new World();
    const tables = w.storage.sql
      .all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
      .map((r) => r.name)
      .filter((t) => w.storage.sql.all<{ name: string }>(`SELECT name FROM pragma_table_info(?)`, t).some((c) => c.name === 'user'));
    const covered = new Set(USER_DATA_PARTS.flatMap((p) => p.tables));
    expect(tables.filter((t) => !covered.has(t))).toEqual([]);
  });

  it('erase deletes the user\'s rows and nobody else\'s; export lists them with bodies in base64', async () => {
    const w = new World();
    const a = w.connect('alice');
    const b = w.connect('bob');
    await a.hello('a1');
    await b.hello('b1');
    await a.post('bob', 'hi bob', 'c1');
    await b.post('alice', 'hi alice', 'c2');
    const before = exportUser(w.storage.sql, 'alice');
    expect(before['messages']!['inbox']!.length).toBeGreaterThan(0);
    expect(before['devices']!['devices']).toEqual([expect.objectContaining({ user: 'alice', device: 'a1' })]);
    expect(typeof before['messages']!['inbox']![0]!['body']).toBe('string');
    const bobBefore = JSON.stringify(exportUser(w.storage.sql, 'bob'));
    await w.storage.commit(() => eraseUser(w.storage.sql, 'alice'));
    const after = exportUser(w.storage.sql, 'alice');
    for (const part of Object.values(after)) for (const rows of Object.values(part)) expect(rows).toEqual([]);
    // Bob keeps his copy of the conversation, alice's message included.
    expect(JSON.stringify(exportUser(w.storage.sql, 'bob'))).toBe(bobBefore);
  });

  it('the admin erase disconnects first, erases, refuses older tokens and forgets the in-memory mailbox', async () => {
    const w = new World();
    const a = w.connect('alice');
    await a.hello('a1');
    const steps: string[] = [];
    const r = await runAdmin(
      { op: 'erase', user: 'alice' },
      {
        storage: w.storage,
        conns: () => w.sockets('alice'),
        now: () => 1_767_225_600_000,
        disconnectAll: async () => void steps.push(`disconnect (users row: ${w.storage.sql.all(`SELECT 1 FROM users WHERE user = 'alice'`).length})`),
        forget: () => void steps.push(`forget (users row: ${w.storage.sql.all(`SELECT 1 FROM users WHERE user = 'alice'`).length})`),
      },
    );
    expect(steps).toEqual(['disconnect (users row: 1)', 'forget (users row: 0)']);
    expect(r.body).toMatchObject({ ok: true, revokedBefore: 1_767_225_600, deleted: { users: 1, devices: 1 } });
  });
});
