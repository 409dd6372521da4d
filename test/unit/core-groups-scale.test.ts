import { describe, expect, it } from 'vitest';
import { HELLO_FEATURES } from '../../protocol/index.js';
import { World } from './core-harness.js';

/**
 * Issue 10: a 1,000-member group, every message accounted for on every member (0 lost, 0 duplicated). A quarter
 * of the members is online with two devices through the run (pushed live, acknowledging as they go); the rest
 * connect afterwards and catch up by pull from their cursors.
 */

const te = new TextEncoder();
const td = new TextDecoder();

describe('groups at scale', () => {
  it('1,000 members: every member gets every message of its range exactly once, in order', async () => {
    const w = new World({ ratePerSec: 10_000, rateBurst: 10_000 });
    const members = Array.from({ length: 1000 }, (_, i) => `u${i}`);
    const online = members.slice(0, 250);
    const conns = new Map(online.flatMap((u) => ['a', 'b'].map((d) => [`${u}/${d}`, w.connect(u)] as const)));
    for (const [key, c] of conns) await c.helloWith(key.split('/')[1]!, HELLO_FEATURES.groups);
    const owner = conns.get('u0/a')!;
    await owner.frame({ t: 'group_create', id: 'c', group: 'big', name: 'big', members: members.slice(1, 256) });
    for (let i = 256; i < 1000; i += 256) await owner.frame({ t: 'group_add', id: `add${i}`, group: 'big', members: members.slice(i, i + 256) });
    expect(owner.of('error')).toEqual([]);
    const MESSAGES = 100;
    const processed = new Map<string, number>();
    const got = new Map<string, number[]>();
    const taken = new Map<string, number>();
    const sync = async (key: string, c: ReturnType<World['connect']>) => {
      const frames = c.of('group_deliver').slice(taken.get(key) ?? 0);
      taken.set(key, (taken.get(key) ?? 0) + frames.length);
      for (const f of frames) {
        for (const e of f.entries) {
          if (e.seq <= (processed.get(key) ?? 0)) continue;
          processed.set(key, e.seq);
          if (e.kind === 'message') (got.get(key) ?? got.set(key, []).get(key)!).push(Number(td.decode(e.body)));
        }
      }
      if (frames.length > 0) await c.frame({ t: 'group_ack', group: 'big', seq: frames.at(-1)!.entries.at(-1)!.seq });
      return frames.length;
    };
    for (let i = 0; i < MESSAGES; i++) {
      const sender = conns.get(`${online[i % online.length]}/a`)!;
      await sender.frame({ t: 'group_send', id: `m${i}`, group: 'big', body: te.encode(String(i)) });
      if (i % 10 === 9) for (const [key, c] of conns) await sync(key, c);
    }
    for (let round = 0; round < 3; round++) for (const [key, c] of conns) await sync(key, c);
    // The rest come online now and pull.
    for (const u of members.slice(250)) {
      const c = w.connect(u);
      conns.set(`${u}/a`, c);
      await c.helloWith('a', HELLO_FEATURES.groups);
      while ((await sync(`${u}/a`, c)) > 0);
    }
    const want = Array.from({ length: MESSAGES }, (_, i) => i);
    let lost = 0;
    let dup = 0;
    for (const key of conns.keys()) {
      const list = got.get(key) ?? [];
      dup += list.length - new Set(list).size;
      lost += want.filter((x) => !list.includes(x)).length;
      expect(list).toEqual(want);
    }
    expect({ lost, dup, devices: conns.size }).toEqual({ lost: 0, dup: 0, devices: 1250 });
    // The member side wrote nothing per message: no inbox row for any of it.
    expect((w.db.prepare(`SELECT count(*) AS c FROM inbox`).get() as { c: number }).c).toBe(0);
  }, 120_000);
});
