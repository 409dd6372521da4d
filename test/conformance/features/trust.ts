import { describe, expect, it } from 'vitest';
import type { ConnectionState, IrisError } from '../../../client/index.js';
import { CLOSE_CODES, encodeJson } from '../../../protocol/index.js';
import { RawSocket, upgradeRequest, waitFor } from '../helpers.js';
import type { ConformanceContext } from './index.js';

/**
 * Token revocation, the expiry close and the admin API (PROTOCOL.md 3.4, OPERATIONS.md "Admin API"), black box,
 * on every profile: a revoked token is refused at the upgrade (401 token_revoked) and a live connection opened
 * with it is closed with 4005 (at once: the revocation is stored in the user's shard, which holds the socket);
 * revocations survive a restart; a token that expires is closed with 4006 after the grace.
 */

/** The claims of a JWT (the test minted it; nothing is verified here). */
function claims(token: string): { jti?: string; iat?: number; exp?: number } {
  return JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { jti?: string; iat?: number; exp?: number };
}

export function trustFeature({ target, user, pool }: ConformanceContext): void {
  describe('token revocation and the admin API', () => {
    const base = () => target().url.replace(/^ws/, 'http').replace(/\/v1\/connect$/, '');

    async function admin(method: 'GET' | 'POST', path: string, credential: string | null = target().adminToken ?? null) {
      const res = await fetch(`${base()}/admin/v1/${path}`, { method, headers: credential === null ? {} : { authorization: `Bearer ${credential}` } });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    }

    /** A raw connection that said hello as `device`. */
    async function connected(token: string, device = 'd1'): Promise<RawSocket> {
      const raw = await RawSocket.open(target().url, token);
      raw.send(encodeJson({ t: 'hello', device, cursor: 0 }));
      await raw.next((f) => f.frame.t === 'welcome');
      return raw;
    }

    const upgrade = (token: string) => upgradeRequest(target().url, { headers: { authorization: `Bearer ${token}` } });

    it('the admin API refuses a missing or wrong credential, and says nothing about the user', async () => {
      expect(target().adminToken, 'the suite servers run with IRIS_ADMIN_SECRET').toBeTruthy();
      const u = user('nobody');
      for (const cred of [null, 'wrong-secret']) {
        for (const [method, path] of [['GET', `users/${u}/stats`], ['POST', `users/${u}/revoke`], ['POST', `users/${u}/disconnect`], ['GET', 'stats']] as const) {
          const r = await admin(method, path, cred);
          expect(r, `${method} ${path} with ${String(cred)}`).toEqual({ status: 401, body: { error: 'unauthorized', message: expect.any(String) } });
        }
      }
      expect((await admin('GET', 'nothing-here')).status).toBe(404);
      expect((await admin('GET', `users/${u}/revoke`)).status).toBe(405);
      expect((await admin('POST', `users/${u}/revoke?jti=x`)).body).toMatchObject({ error: 'bad_request' });
    }, 30_000);

    it('revoking one token (jti) closes its live connection with 4005 and refuses it at the upgrade; other tokens stay good', async () => {
      const u = user('rv');
      const t1 = await target().token(u);
      const t2 = await target().token(u);
      const a = await connected(t1, 'd1');
      const b = await connected(t2, 'd2');
      const c = claims(t1);
      const r = await admin('POST', `users/${u}/revoke?jti=${encodeURIComponent(c.jti!)}&exp=${c.exp!}`);
      expect(r).toMatchObject({ status: 200, body: { ok: true, closed: 1 } });
      // Well within the 60 s the issue allows: the shard that stored the revocation closes the socket itself.
      await waitFor(() => a.closed !== null, 10_000, 'the revoked connection closed');
      expect(a.closed?.code).toBe(CLOSE_CODES.token_revoked);
      const refused = await upgrade(t1);
      expect(refused.status).toBe(401);
      expect(JSON.parse(refused.body)).toMatchObject({ error: 'token_revoked' });
      // A plain GET, how a client whose handshake failed learns why, says the same (not 426).
      const probe = await fetch(`${base()}/v1/connect?access_token=${t1}`);
      expect([probe.status, ((await probe.json()) as { error: string }).error]).toEqual([401, 'token_revoked']);
      const good = await fetch(`${base()}/v1/connect?access_token=${t2}`);
      expect([good.status, ((await good.json()) as { error: string }).error]).toEqual([426, 'upgrade_required']);
      expect((await upgrade(t2)).status).toBe(101);
      // The other connection is untouched: it still answers.
      b.send(encodeJson({ t: 'ping' }));
      await b.next((f) => f.frame.t === 'pong');
      expect(b.closed).toBeNull();
      b.close();
    }, 30_000);

    it('log out everywhere: every token issued before the time is refused and its connections closed; a newer token works', async () => {
      const u = user('rb');
      const now = Math.floor(Date.now() / 1000);
      const old = await target().token(u, { iat: now - 10 });
      const a = await connected(old, 'd1');
      const b = await connected(await target().token(u, { iat: now - 5 }), 'd2');
      const r = await admin('POST', `users/${u}/revoke?before=${now}`);
      expect(r).toMatchObject({ status: 200, body: { ok: true, before: now, closed: 2 } });
      await waitFor(() => a.closed !== null && b.closed !== null, 10_000, 'both connections closed');
      expect([a.closed?.code, b.closed?.code]).toEqual([CLOSE_CODES.token_revoked, CLOSE_CODES.token_revoked]);
      expect(JSON.parse((await upgrade(old)).body)).toMatchObject({ error: 'token_revoked' });
      const fresh = await connected(await target().token(u, { iat: now }), 'd1');
      expect(fresh.closed).toBeNull();
      const stats = await admin('GET', `users/${u}/stats`);
      expect(stats).toMatchObject({ status: 200, body: { user: u, connections: 1, revokedBefore: now } });
      fresh.close();
    }, 30_000);

    it('disconnect closes one device (or all) with 4007', async () => {
      const u = user('dc');
      const a = await connected(await target().token(u), 'd1');
      const b = await connected(await target().token(u), 'd2');
      expect(await admin('POST', `users/${u}/disconnect?device=d1`)).toMatchObject({ status: 200, body: { closed: 1 } });
      await waitFor(() => a.closed !== null, 10_000, 'd1 closed');
      expect(a.closed?.code).toBe(CLOSE_CODES.disconnected_by_admin);
      b.send(encodeJson({ t: 'ping' }));
      await b.next((f) => f.frame.t === 'pong');
      expect(await admin('POST', `users/${u}/disconnect`)).toMatchObject({ status: 200, body: { closed: 1 } });
      await waitFor(() => b.closed !== null, 10_000, 'd2 closed');
      expect(b.closed?.code).toBe(CLOSE_CODES.disconnected_by_admin);
      expect((await admin('GET', 'stats')).status).toBe(200);
    }, 30_000);

    it('a connection whose token expires is closed with 4006 after the grace', async () => {
      const grace = target().tokenExpiryGraceS ?? 60;
      const u = user('ex');
      const raw = await connected(await target().token(u, { expiresIn: '2s' }));
      const t0 = Date.now();
      // On-prem checks on its heartbeat pass (IRIS_WS_PING_MS; 3 s on the suite's server); Cloudflare on the alarm.
      await waitFor(() => raw.closed !== null, 2_000 + grace * 1000 + 15_000, 'the expiry close');
      expect(raw.closed?.code).toBe(CLOSE_CODES.token_expired);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
    }, 120_000);

    it('revocations survive a restart', async () => {
      const u = user('rr');
      const t = await target().token(u);
      const c = claims(t);
      expect((await admin('POST', `users/${u}/revoke?jti=${encodeURIComponent(c.jti!)}&exp=${c.exp!}`)).status).toBe(200);
      await target().restart();
      expect(JSON.parse((await upgrade(t)).body)).toMatchObject({ error: 'token_revoked' });
      expect((await upgrade(await target().token(u))).status).toBe(101);
    }, 120_000);

    it('refresh: a new token keeps the connection past the old one\'s expiry; a connection that did not refresh is closed', async () => {
      const u = user('rf');
      const refreshed = await connected(await target().token(u, { expiresIn: '2s' }), 'd1');
      const control = await connected(await target().token(u, { expiresIn: '2s' }), 'd2');
      const fresh = await target().token(u, { expiresIn: '1h' });
      refreshed.send(encodeJson({ t: 'refresh', token: fresh }));
      const ok = await refreshed.next((f) => f.frame.t === 'refreshed');
      expect(ok.frame).toEqual({ t: 'refreshed', exp: claims(fresh).exp });
      // The event to wait for: the connection that kept its 2 s token is closed for it...
      await waitFor(() => control.closed !== null, 2_000 + (target().tokenExpiryGraceS ?? 60) * 1000 + 15_000, 'the control connection closed');
      expect(control.closed?.code).toBe(CLOSE_CODES.token_expired);
      // ...and by then the refreshed one, whose old token expired just as long ago, is still served.
      const from = refreshed.frames.length;
      refreshed.send(encodeJson({ t: 'ping' }));
      await refreshed.next((f) => f.frame.t === 'pong', 5_000, from);
      expect(refreshed.closed).toBeNull();
      refreshed.close();
    }, 120_000);

    it('refresh refused: another user\'s token, a bad token, a revoked token; the connection stays open', async () => {
      const u = user('rx');
      const raw = await connected(await target().token(u));
      const refuse = async (token: string) => {
        const from = raw.frames.length;
        raw.send(encodeJson({ t: 'refresh', token }));
        const f = await raw.next((x) => x.frame.t === 'error' || x.frame.t === 'refreshed', 5_000, from);
        return f.frame.t === 'error' ? f.frame.code : f.frame.t;
      };
      expect(await refuse(await target().token(user('other')))).toBe('token_mismatch');
      expect(await refuse('not-a-jwt')).toBe('token_invalid');
      expect(await refuse(await target().token(u, { expiresIn: '-1h' }))).toBe('token_invalid');
      const revoked = await target().token(u);
      const c = claims(revoked);
      expect((await admin('POST', `users/${u}/revoke?jti=${encodeURIComponent(c.jti!)}&exp=${c.exp!}`)).status).toBe(200);
      expect(await refuse(revoked)).toBe('token_revoked');
      expect(raw.closed).toBeNull();
      expect(await refuse(await target().token(u))).toBe('refreshed');
      raw.close();
    }, 30_000);

    it('the SDK refreshes through its token callback without reconnecting', async () => {
      const u = user('sdk');
      const handed: string[] = [];
      const c = pool.make(u, {
        // The first token lives 3 s (refreshed at 80%), the next ones an hour.
        token: async () => {
          const t = await target().token(u, { expiresIn: handed.length === 0 ? '3s' : '1h' });
          handed.push(t);
          return t;
        },
      });
      const states: ConnectionState[] = [];
      c.on('state', (s) => void states.push(s));
      await c.connect();
      const control = await connected(await target().token(u, { expiresIn: '3s' }), 'control');
      await waitFor(() => control.closed !== null, 3_000 + (target().tokenExpiryGraceS ?? 60) * 1000 + 15_000, 'the control connection closed');
      expect(control.closed?.code).toBe(CLOSE_CODES.token_expired);
      expect(handed.length).toBe(2);
      expect(states).not.toContain('reconnecting');
      expect(c.state).toBe('open');
    }, 120_000);

    it('the SDK with a string token stops with auth_failed (token_revoked) when its token is revoked', async () => {
      const u = user('sdkr');
      const token = await target().token(u);
      const c = pool.make(u, { token });
      const errors: IrisError[] = [];
      c.on('error', (e) => void errors.push(e));
      await c.connect();
      const cl = claims(token);
      expect((await admin('POST', `users/${u}/revoke?jti=${encodeURIComponent(cl.jti!)}&exp=${cl.exp!}`)).status).toBe(200);
      await waitFor(() => c.state === 'closed', 10_000, 'the client to stop');
      expect(errors.map((e) => [e.code, e.reason])).toContainEqual(['auth_failed', 'token_revoked']);
    }, 30_000);

    it('the SDK with a token callback is told why (4005) and reconnects with a new token', async () => {
      const u = user('sdkc');
      const handed: string[] = [];
      const c = pool.make(u, {
        token: async () => {
          const t = await target().token(u);
          handed.push(t);
          return t;
        },
      });
      const errors: IrisError[] = [];
      c.on('error', (e) => void errors.push(e));
      await c.connect();
      const cl = claims(handed[0]!);
      expect((await admin('POST', `users/${u}/revoke?jti=${encodeURIComponent(cl.jti!)}&exp=${cl.exp!}`)).status).toBe(200);
      await waitFor(() => handed.length >= 2 && c.state === 'open', 10_000, 'a reconnect with a new token');
      expect(errors.map((e) => [e.code, e.closeCode])).toContainEqual(['closed', CLOSE_CODES.token_revoked]);
    }, 30_000);

    it('export returns the user\'s stored data; erase deletes it, closes the connections (4007), refuses older tokens; the recipient keeps what was sent', async () => {
      const u = user('er');
      const peer = user('erp');
      const old = await target().token(u, { iat: Math.floor(Date.now() / 1000) - 5 });
      const a = await connected(old, 'd1');
      const b = await connected(await target().token(peer), 'd1');
      a.send(encodeJson({ t: 'send', id: 'm1', to: peer, body: new TextEncoder().encode('before the erase') }));
      await a.next((f) => f.frame.t === 'send_ack');
      await b.next((f) => f.frame.t === 'deliver');
      const exported = await admin('GET', `users/${u}/export`);
      expect(exported.status).toBe(200);
      const data = exported.body['data'] as Record<string, Record<string, Record<string, unknown>[]>>;
      expect(data['devices']!['devices']!.map((d) => d['device'])).toEqual(['d1']);
      expect(data['account']!['users']).toHaveLength(1);

      const erased = await admin('POST', `users/${u}/erase`);
      expect(erased).toMatchObject({ status: 200, body: { ok: true, user: u } });
      await waitFor(() => a.closed !== null, 10_000, 'the erased user\'s connection closed');
      expect(a.closed?.code).toBe(CLOSE_CODES.disconnected_by_admin);
      const after = (await admin('GET', `users/${u}/export`)).body['data'] as Record<string, Record<string, unknown[]>>;
      for (const [part, tables] of Object.entries(after)) {
        for (const [table, rows] of Object.entries(tables)) if (table !== 'revoked_before') expect(rows, `${part}.${table}`).toEqual([]);
      }
      expect(JSON.parse((await upgrade(old)).body)).toMatchObject({ error: 'token_revoked' });
      // The recipient's copy is the recipient's: still there for a device of theirs that starts from scratch.
      const b2 = await connected(await target().token(peer), 'd2');
      const got = await b2.next((f) => f.frame.t === 'deliver');
      expect(got.frame.t === 'deliver' && got.frame.entries.some((e) => e.peer === u)).toBe(true);
      // The erased user may start again, with a token issued from now on.
      const fresh = await connected(await target().token(u), 'd1');
      expect(fresh.closed).toBeNull();
      for (const r of [b, b2, fresh]) r.close();
    }, 60_000);
  });
}
