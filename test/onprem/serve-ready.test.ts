import { connect } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { RawClient, ServerProcess, TEST_ENV, freePort, removeDir, startServer, tempDir, token, usersOn, waitFor } from './helpers.js';
import { strayLines, workerLine } from './log-lines.js';

/**
 * Readiness (the "ready" line, /readyz) means "a connect succeeds now", liveness (/healthz) only "a process
 * answers"; HTTP-level refusals are JSON with a precise status; every log entry is one line.
 */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) removeDir(d);
});

/** Sends raw bytes on a fresh TCP connection and resolves with everything read until the server closes it. */
function raw(port: number, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('error', reject);
    s.on('close', () => resolve(got));
    s.on('connect', () => s.write(bytes));
  });
}

function parse(resp: string): { status: number; headers: string; body: unknown } {
  const i = resp.indexOf('\r\n\r\n');
  const head = resp.slice(0, i);
  return { status: Number(/^HTTP\/1\.1 (\d+)/.exec(head)?.[1]), headers: head.toLowerCase(), body: JSON.parse(resp.slice(i + 4)) };
}

describe('readiness', () => {
  it('after the ready line, connects for users of every worker succeed on the first try', async () => {
    const workers = 6;
    const dataDir = tempDir();
    dirs.push(dataDir);
    const port = await freePort();
    // Tokens first, so the connects go out the moment the line appears (no polling delay in between).
    const users = Array.from({ length: workers }, (_, w) => usersOn(w, workers, `ready${w}-`, 4)).flat();
    const tokens = await Promise.all(users.map((u) => token(u)));
    const server = new ServerProcess(['--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir, '--workers', String(workers)], TEST_ENV);
    try {
      const url = `ws://127.0.0.1:${port}/v1/connect`;
      const opened = await new Promise<PromiseSettledResult<RawClient>[]>((resolve, reject) => {
        const onData = () => {
          if (!/ready: listening on|listening on/.test(server.stdout)) return;
          server.child.stdout!.off('data', onData);
          // At once, many connects per owner: they land on every worker (SO_REUSEPORT), so every worker must
          // already route to every other.
          void Promise.allSettled(tokens.map((t) => RawClient.open(url, t))).then(resolve);
        };
        server.child.stdout!.on('data', onData);
        void server.exited.then((e) => reject(new Error(`server exited: ${e.stderr}`)));
      });
      const failed = opened.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
      expect(failed).toEqual([]);
      for (const r of opened) if (r.status === 'fulfilled') r.value.close();
      const rz = await fetch(`http://127.0.0.1:${port}/readyz`);
      expect(rz.status).toBe(200);
      expect(await rz.json()).toMatchObject({ ready: true, workers: Array(workers).fill(true) });
    } finally {
      expect((await server.stop()).code).toBe(0);
    }
  });

  it('/readyz is 503 from the moment a worker dies until it is back; /healthz stays 200', async () => {
    const s = await startServer({ workers: 2 });
    dirs.push(s.dataDir);
    try {
      const [, victim] = s.server.workerPids;
      process.kill(victim!, 'SIGKILL');
      await waitFor('the supervisor to see worker 1 die', () => /worker 1 \(pid \d+\) died/.test(s.server.stderr));
      const down = await fetch(`http://127.0.0.1:${s.port}/readyz`);
      expect(down.status).toBe(503);
      expect(await down.json()).toMatchObject({ ready: false, workers: [true, false] });
      expect((await fetch(`http://127.0.0.1:${s.port}/healthz`)).status).toBe(200);
      await waitFor('worker 1 to be back', () => /worker 1 is back/.test(s.server.stderr));
      const up = await fetch(`http://127.0.0.1:${s.port}/readyz`);
      expect(up.status).toBe(200);
      // And "back" means serving: its users connect on the first try.
      const c = await RawClient.open(s.url, await token(usersOn(1, 2, 'back-')[0]!));
      c.close();
    } finally {
      expect((await s.server.stop()).code).toBe(0);
    }
  });
  it('a restarted worker is "back" only once every other worker routes to it', async () => {
    const s = await startServer({ workers: 2 });
    dirs.push(s.dataDir);
    const [w0, w1] = s.server.workerPids;
    try {
      // Worker 0 cannot process anything (stopped) while worker 1 dies and comes back: worker 0 would still
      // refuse worker 1's users with 503, so nothing may say worker 1 is back yet.
      process.kill(w0!, 'SIGSTOP');
      process.kill(w1!, 'SIGKILL');
      await waitFor('worker 1 to start again', () => /worker 1 (started|is back)/.test(s.server.stderr), 30_000);
      expect(s.server.stderr).not.toMatch(/worker 1 is back/);
      process.kill(w0!, 'SIGCONT');
      await waitFor('worker 1 to be back', () => /worker 1 is back/.test(s.server.stderr));
      expect((await fetch(`http://127.0.0.1:${s.port}/readyz`)).status).toBe(200);
      const users = [...usersOn(0, 2, 'again0-', 4), ...usersOn(1, 2, 'again1-', 4)];
      const opened = await Promise.allSettled(users.map(async (u) => RawClient.open(s.url, await token(u))));
      expect(opened.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      for (const r of opened) if (r.status === 'fulfilled') r.value.close();
    } finally {
      try {
        process.kill(w0!, 'SIGCONT');
      } catch {
        // Gone.
      }
      expect((await s.server.stop()).code).toBe(0);
    }
  });
});

describe('HTTP refusals and logs', () => {
  it('answers oversized headers with 431 and a header timeout with 408, JSON bodies', async () => {
    const s = await startServer({ workers: 1, args: ['--headers-timeout-ms', '300'] });
    dirs.push(s.dataDir);
    try {
      const big = parse(await raw(s.port, `GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(40_000)}\r\n\r\n`));
      expect(big.status).toBe(431);
      expect(big.body).toEqual({ error: 'headers_too_large', message: expect.any(String) });
      // Half a request, then nothing: the server answers when its header timeout fires, then closes.
      const slow = parse(await raw(s.port, 'GET /healthz HTTP/1.1\r\nhost: x\r\n'));
      expect(slow.status).toBe(408);
      expect(slow.headers).toContain('content-type: application/json');
      expect(slow.body).toEqual({ error: 'request_timeout', message: expect.any(String) });
    } finally {
      expect((await s.server.stop()).code).toBe(0);
    }
  });

  it('logs a failed forward as one JSON line (no stack) naming the sender and its connection\'s trace id', async () => {
    const s = await startServer({ workers: 2, env: { IRIS_PEER_TIMEOUT_MS: '200', IRIS_RETRY_BASE_MS: '5000', IRIS_RETRY_MAX_MS: '5000' } });
    dirs.push(s.dataDir);
    const [, w1] = s.server.workerPids;
    try {
      const [from] = usersOn(0, 2, 'fwdlog-a');
      const [to] = usersOn(1, 2, 'fwdlog-b');
      const a = await RawClient.open(s.url, await token(from!));
      a.send({ t: 'hello', device: 'd', cursor: 0 });
      await a.next('welcome');
      // Worker 1 stops answering (its peer socket still accepts): the forward times out and is logged.
      process.kill(w1!, 'SIGSTOP');
      a.send({ t: 'send', id: 'm1', to: to!, body: new TextEncoder().encode('hi') });
      await a.next('send_ack');
      await waitFor('the forward failure to be logged', () => /forward .* failed/.test(s.server.stderr));
      process.kill(w1!, 'SIGCONT');
      a.close();
    } finally {
      try {
        process.kill(w1!, 'SIGCONT');
      } catch {
        // Gone.
      }
      expect((await s.server.stop()).code).toBe(0);
    }
    const lines = s.server.stderr.split('\n').filter((l) => l !== '');
    const failed = lines.filter((l) => /forward .* failed/.test(l));
    expect(failed).toHaveLength(1);
    expect(workerLine(failed[0]!)).toMatchObject({ level: 'warn', profile: 'onprem', worker: 0, user: expect.stringMatching(/^fwdlog-a/), trace: expect.stringMatching(/^[0-9a-f]{32}$/), error: expect.stringMatching(/^LinkError: /) });
    expect(strayLines(lines)).toEqual([]);
  });
});
