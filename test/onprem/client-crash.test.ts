import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, removeDir, sdkClient, startServer, tempDir, token, waitFor, type ServerProcess } from './helpers.js';
import { mulberry32 } from '../fixtures/prng.js';

/**
 * Finding 1 of issue 7: an app killed with SIGKILL while the FileStore was writing (after its handler ran) got
 * the same entry again on restart. Here a receiving process is killed again and again at chosen points —
 * right after a handler logged, in the middle of a store write, and by the parent at arbitrary moments — and
 * what the app saw across all its lives is checked: no message twice, none lost (each one either reached a
 * 'message' handler or was offered again as 'recovered'), FIFO order, and no temp file left behind.
 */

let server: ServerProcess;
let url: string;
let dataDir: string;
const dirs: string[] = [];

beforeAll(async () => {
  // A small send window keeps deliver frames small, so a stream of N entries takes many store writes.
  ({ server, url, dataDir } = await startServer({ workers: 1, env: { IRIS_SEND_WINDOW: '8' } }));
});

afterAll(async () => {
  await server?.stop();
  removeDir(dataDir);
  for (const d of dirs) removeDir(d);
});

interface Life {
  msgs: string[];
  recs: string[];
  stderr: string;
}

const prng = mulberry32;

describe('client crash safety (FileStore, SIGKILL mid-stream)', () => {
  it('never hands the app the same message twice and loses none, across many kills at random points', async () => {
    const N = 120;
    const seed = Number(process.env['IRIS_CRASH_SEED'] ?? Date.now() % 1_000_000);
    const rnd = prng(seed);
    const ctx = `seed ${seed}`;
    const sender = 'crash-alice';
    const receiver = 'crash-bob';
    const dir = tempDir('iris-client-crash-');
    dirs.push(dir);
    const storePath = join(dir, 'bob.json');

    const a = sdkClient(url, sender, 'a1');
    await a.connect();
    await Promise.all(Array.from({ length: N }, (_, i) => a.send(receiver, `m${i}`)));
    await a.close();
    const tok = await token(receiver);

    const lives: Life[] = [];
    const msgs = (): string[] => lives.flatMap((l) => l.msgs);
    const seenAll = (): Set<string> => new Set(lives.flatMap((l) => [...l.msgs, ...l.recs]));

    const live = async (crash: string, killAfterLines: number | null): Promise<Life> => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'test/onprem/client-crash-child.ts')], {
        cwd: ROOT,
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, IRIS_URL: url, IRIS_TOKEN: tok, IRIS_STORE: storePath, IRIS_CRASH: crash },
      });
      const life: Life = { msgs: [], recs: [], stderr: '' };
      lives.push(life);
      child.stderr.on('data', (b: Buffer) => (life.stderr += b.toString()));
      let lines = 0;
      const exited = new Promise<void>((r) => child.on('exit', () => r()));
      createInterface({ input: child.stdout }).on('line', (l) => {
        if (l.startsWith('MSG ')) life.msgs.push(l.slice(4));
        else if (l.startsWith('REC ')) life.recs.push(l.slice(4));
        else return;
        if (killAfterLines !== null && ++lines === killAfterLines) child.kill('SIGKILL');
      });
      let done = false;
      void exited.then(() => (done = true));
      // Ends by dying (its own crash point or the parent's kill), or once everything was seen.
      await waitFor(`life ${lives.length} to end (${ctx})`, () => done || seenAll().size === N, 60_000, 10);
      if (!done) {
        child.stdin.write('quit\n');
        await exited;
      }
      return life;
    };

    for (let round = 0; seenAll().size < N && round < 40; round++) {
      const left = N - seenAll().size;
      const k = 1 + Math.floor(rnd() * Math.min(20, left));
      switch (round % 3) {
        case 0:
          await live(`handler:${k}`, null);
          break;
        case 1:
          await live(`handout:${1 + Math.floor(rnd() * 3)}`, null);
          break;
        default:
          await live('none', k);
          break;
      }
    }
    // A last clean life: whatever is left, then a normal close.
    if (seenAll().size < N) await live('none', null);

    const all = msgs();
    const expected = Array.from({ length: N }, (_, i) => `m${i}`);
    // No duplicate: each message reached a 'message' handler at most once across all lives.
    expect(all.length - new Set(all).size, `${ctx}: duplicates in ${all.join(',')}`).toBe(0);
    // Nothing lost: each one reached a handler or was offered as recovered.
    expect([...seenAll()].sort(), ctx).toEqual([...expected].sort());
    // FIFO: 'message' events come in send order across lives.
    expect(all, ctx).toEqual(expected.filter((t) => all.includes(t)));
    // Recovered ones were handed out by a life that died: never given as 'message' later.
    for (const [i, l] of lives.entries()) {
      for (const r of l.recs) expect(lives.slice(i).flatMap((x) => x.msgs), `${ctx}: ${r} recovered, then a message`).not.toContain(r);
    }
    expect(readdirSync(dir).filter((n) => n.endsWith('.tmp')), ctx).toEqual([]);
    expect(lives.length, `${ctx}: ${lives.map((l) => l.stderr).join('\n')}`).toBeGreaterThan(3);
  });
});
