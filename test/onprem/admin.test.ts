import { afterAll, describe, expect, it } from 'vitest';
import { removeDir, startServer, usersOn, type ServerProcess } from './helpers.js';

/**
 * The admin API on-prem, what the conformance suite (which always configures a secret) cannot show: it is off by
 * default, and any worker answers for any user (the call travels to the owner over the links) and for the whole
 * process (stats summed over every worker).
 */

const started: { server: ServerProcess; dataDir: string }[] = [];

afterAll(async () => {
  for (const s of started) {
    await s.server.stop();
    removeDir(s.dataDir);
  }
}, 60_000);

async function get(port: number, path: string, secret?: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${port}/admin/v1/${path}`, { headers: secret === undefined ? {} : { authorization: `Bearer ${secret}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('on-prem admin API', () => {
  it('is off without IRIS_ADMIN_SECRET: 403 admin_disabled for every request', async () => {
    const s = await startServer({ workers: 2 });
    started.push(s);
    for (const path of ['stats', 'users/alice/stats']) {
      expect(await get(s.port, path, 'anything')).toEqual({ status: 403, body: { error: 'admin_disabled', message: expect.any(String) } });
    }
  }, 60_000);

  it('with a secret: users of every worker answer through any worker, and stats cover every worker', async () => {
    const s = await startServer({ workers: 3, env: { IRIS_ADMIN_SECRET: 'op-secret' } });
    started.push(s);
    // Each request lands on whichever worker the kernel picks: asking about a user of each worker many times
    // goes through the links for most of them.
    for (let w = 0; w < 3; w++) {
      const [u] = usersOn(w, 3, 'adm');
      for (let i = 0; i < 6; i++) expect(await get(s.port, `users/${u}/stats`, 'op-secret')).toMatchObject({ status: 200, body: { user: u, connections: 0 } });
    }
    const stats = await get(s.port, 'stats', 'op-secret');
    expect(stats).toMatchObject({ status: 200, body: { profile: 'onprem', workers: 3, workersAnswering: 3 } });
    expect((stats.body['perWorker'] as unknown[]).length).toBe(3);
    expect((await get(s.port, 'stats', 'wrong')).status).toBe(401);
  }, 60_000);
});
