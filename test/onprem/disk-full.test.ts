import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServerFrame } from '../../protocol/index.js';
import { RawClient, removeDir, scrape, startServer, tempDir, token, usersOn, waitFor } from './helpers.js';
import { strayLines } from './log-lines.js';

/**
 * A full disk, for real: the data directory is on a 16 MiB tmpfs that the test fills with a file (ENOSPC on
 * SQLite's WAL write, SQLITE_FULL), then empties. Mounting needs root (which the test and CI run as).
 */

let base = '';
let mnt = '';
beforeAll(() => {
  base = tempDir('iris-onprem-full-');
  mnt = join(base, 'mnt');
  mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt]);
});
afterAll(() => {
  if (mnt !== '') {
    try {
      execFileSync('umount', [mnt]);
    } catch {
      // Not mounted.
    }
  }
  removeDir(base);
});

/** Writes a file until the file system says ENOSPC. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(256 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  // The last partial chunk: byte-sized writes until nothing fits.
  const fd2 = openSync(file, 'a');
  try {
    for (let size = 65536; size >= 1; size = Math.floor(size / 2)) {
      try {
        for (;;) writeSync(fd2, Buffer.alloc(size));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
      }
    }
  } finally {
    closeSync(fd2);
  }
}

const body = (s: string) => new TextEncoder().encode(s);
const errors = (c: RawClient) => c.frames.filter((f): f is Extract<ServerFrame, { t: 'error' }> => f.t === 'error');

describe('disk full', () => {
  it('refuses sends with unavailable + retry-after, keeps hello/deliver/ack working, logs once, recovers', async () => {
    const s = await startServer({ dataDir: join(mnt, 'data'), workers: 2 });
    try {
      const [alice] = usersOn(0, 2, 'full-a');
      const [bob] = usersOn(1, 2, 'full-b');
      // Bob receives five messages and does not ack them: they wait in his inbox.
      const b1 = await RawClient.open(s.url, await token(bob!));
      b1.send({ t: 'hello', device: 'phone', cursor: 0 });
      await b1.next('welcome');
      const a = await RawClient.open(s.url, await token(alice!));
      a.send({ t: 'hello', device: 'laptop', cursor: 0 });
      await a.next('welcome');
      for (let i = 0; i < 5; i++) {
        a.send({ t: 'send', id: `m${i}`, to: bob!, body: body(`before ${i}`) });
        await a.next('send_ack', 10_000, (f) => f.id === `m${i}`);
      }
      await waitFor('bob to get five entries', () => b1.frames.filter((f) => f.t === 'deliver').flatMap((f) => (f.t === 'deliver' ? f.entries : [])).length >= 5);
      b1.close();

      fill(join(mnt, 'filler'));

      // The sender: a typed, retryable refusal with a retry-after, for each attempt.
      a.send({ t: 'send', id: 'm5', to: bob!, body: body('during') });
      const refused = await a.next('error', 10_000, (f) => f.ref === 'm5');
      expect(refused.code).toBe('unavailable');
      expect(refused.retryAfter).toBeGreaterThan(0);
      a.send({ t: 'send', id: 'm6', to: bob!, body: body('during') });
      expect((await a.next('error', 10_000, (f) => f.ref === 'm6')).code).toBe('unavailable');

      // Bob can still connect, read what waits for him and ack it.
      const b2 = await RawClient.open(s.url, await token(bob!));
      b2.send({ t: 'hello', device: 'phone', cursor: 0 });
      await b2.next('welcome');
      await waitFor('bob to get his five entries again', () => b2.frames.flatMap((f) => (f.t === 'deliver' ? f.entries : [])).length >= 5);
      const got = b2.frames.flatMap((f) => (f.t === 'deliver' ? f.entries : []));
      expect(got.map((e) => new TextDecoder().decode(e.body))).toEqual([0, 1, 2, 3, 4].map((i) => `before ${i}`));
      b2.send({ t: 'deliver_ack', seq: got[got.length - 1]!.seq });

      // Visible to operators: the gauge and /readyz.
      const m = await scrape(s.port);
      expect(m.get('iris_storage_full{worker="0"}')).toBe(1);
      const rz = await fetch(`http://127.0.0.1:${s.port}/readyz`);
      expect(rz.status).toBe(503);
      expect(((await rz.json()) as { storageFull: number[] }).storageFull).toContain(0);

      // Space returns: the retried send (same id) is accepted and delivered, once.
      rmSync(join(mnt, 'filler'));
      let acked = false;
      for (let attempt = 0; attempt < 40 && !acked; attempt++) {
        const before = a.frames.length;
        a.send({ t: 'send', id: 'm5', to: bob!, body: body('during') });
        const f = await a.next('send_ack', 10_000, (x) => x.id === 'm5').catch(() => null);
        if (f) acked = true;
        else {
          const e = a.frames.slice(before).find((x) => x.t === 'error');
          expect(e && e.t === 'error' ? e.code : null).toBe('unavailable');
          await new Promise((r) => setTimeout(r, e && e.t === 'error' ? (e.retryAfter ?? 250) : 250)); // as the server asks
        }
      }
      expect(acked).toBe(true);
      await waitFor('bob to get the message sent after recovery', () =>
        b2.frames.flatMap((f) => (f.t === 'deliver' ? f.entries : [])).some((e) => new TextDecoder().decode(e.body) === 'during'),
      );
      await waitFor('/readyz to be ready again', async () => (await fetch(`http://127.0.0.1:${s.port}/readyz`)).status === 200);
      expect(errors(b2)).toEqual([]); // hello, deliveries and the ack never failed for bob
      a.close();
      b2.close();
    } finally {
      rmSync(join(mnt, 'filler'), { force: true });
      expect((await s.server.stop()).code).toBe(0);
    }
    // One line per condition, not one per refused write; every line a supervisor line or a worker's JSON line (no stack traces).
    const lines = s.server.stderr.split('\n').filter((l) => l !== '');
    expect(lines.filter((l) => /storage full/.test(l)).length).toBeGreaterThanOrEqual(1);
    expect(lines.filter((l) => /storage full/.test(l)).length).toBeLessThanOrEqual(2);
    expect(strayLines(lines)).toEqual([]);
    expect(lines.length).toBeLessThan(15);
  });
});
