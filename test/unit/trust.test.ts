import { SignJWT } from 'jose';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { TokenVerifier, authConfigFromEnv, tokenCheck } from '../../auth/index.js';
import { ADMIN_ERRORS, checkAdmin, isAdminAnswer, parseAdminRequest, runAdmin, type AdminRequest } from '../../core/admin.js';
import type { Conn, ConnState, TokenClaims } from '../../core/ports.js';
import { refreshConn } from '../../core/refresh.js';
import { Revocations, claimsHeader, closeRevoked, expiryDeadline, parseClaims } from '../../core/revocation.js';
import { CLOSE_CODES, ProtocolError } from '../../protocol/index.js';
import { TokenRefresher, refreshDelay } from '../../client/token-refresh.js';
import type { IrisError } from '../../client/index.js';
import type { ClientFrame } from '../../protocol/index.js';
import { World } from './core-harness.js';

/** Token revocation, refresh checks and the admin API's shared part (core/revocation.ts, core/refresh.ts, core/admin.ts). */

const SECRET = 'trust-unit-secret';
const NOW = 1_767_225_600;

async function jwt(sub: string, claims: { jti?: string; iat?: number; exp?: number } = {}, secret = SECRET): Promise<string> {
  const j = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 3600);
  if (claims.jti !== undefined) j.setJti(claims.jti);
  if (claims.iat !== undefined) j.setIssuedAt(claims.iat);
  return j.sign(new TextEncoder().encode(secret));
}

class Sock implements Conn {
  closed: { code: number; reason: string } | null = null;
  readonly queuedBytes = 0;
  constructor(
    public token: TokenClaims | undefined,
    public state: ConnState | null = null,
  ) {}
  setState(s: ConnState): void {
    this.state = s;
  }
  setToken(t: TokenClaims): void {
    this.token = t;
  }
  send(): void {}
  close(code: number, reason: string): void {
    this.closed ??= { code, reason };
  }
}

const device = (d: string): ConnState => ({ device: d, sent: 0, enc: 'json', rsent: 0 });

describe('revocations (core/revocation.ts)', () => {
  it('one token by jti, until its exp, then pruned', () => {
    const w = new World();
    const r = new Revocations(w.storage.sql, 'alice');
    expect(r.isRevoked({ jti: 'a', iat: NOW, exp: NOW + 60 })).toBe(false);
    r.revokeToken('a', NOW + 60, NOW);
    expect(r.isRevoked({ jti: 'a', iat: NOW, exp: NOW + 60 })).toBe(true);
    expect(r.isRevoked({ jti: 'b', iat: NOW })).toBe(false);
    // Another user's token with the same jti is not this user's revocation.
    expect(new Revocations(w.storage.sql, 'bob').isRevoked({ jti: 'a' })).toBe(false);
    r.prune(NOW + 61);
    expect(r.list()).toEqual([]);
    // A later revocation prunes what expired: only the live one stays.
    r.revokeToken('old', NOW + 1, NOW);
    r.revokeToken('new', NOW + 600, NOW + 2);
    expect(r.list()).toEqual([{ jti: 'new', exp: NOW + 600 }]);
  });

  it('log out everywhere: iat before the time, or no iat, is revoked; the time never moves back', () => {
    const w = new World();
    const r = new Revocations(w.storage.sql, 'alice');
    expect(r.isRevoked({})).toBe(false);
    r.revokeBefore(NOW);
    expect(r.isRevoked({ iat: NOW - 1 })).toBe(true);
    expect(r.isRevoked({ iat: NOW })).toBe(false);
    expect(r.isRevoked({ jti: 'x' })).toBe(true);
    r.revokeBefore(NOW - 100);
    expect(r.before()).toBe(NOW);
  });

  it('closeRevoked closes exactly the connections the revocations cover, with 4005', () => {
    const w = new World();
    const r = new Revocations(w.storage.sql, 'alice');
    const a = new Sock({ jti: 'a', iat: NOW });
    const b = new Sock({ jti: 'b', iat: NOW });
    const legacy = new Sock(undefined);
    r.revokeToken('a', NOW + 60, NOW);
    expect(closeRevoked([a, b, legacy], r)).toBe(1);
    expect(a.closed?.code).toBe(CLOSE_CODES.token_revoked);
    expect(b.closed).toBeNull();
    expect(legacy.closed).toBeNull();
  });

  it('the claims header keeps only the three claims, and anything unreadable reads as none', () => {
    expect(parseClaims(claimsHeader({ jti: 'j', iat: 1, exp: 2 }))).toEqual({ jti: 'j', iat: 1, exp: 2 });
    expect(parseClaims('{"jti":5,"iat":"x","exp":3,"sub":"mallory"}')).toEqual({ exp: 3 });
    expect(parseClaims('not json')).toEqual({});
    expect(parseClaims(undefined)).toEqual({});
  });

  it('expiry deadline: exp plus the grace, none without exp', () => {
    expect(expiryDeadline({ exp: NOW }, 60_000)).toBe(NOW * 1000 + 60_000);
    expect(expiryDeadline({}, 60_000)).toBeUndefined();
    expect(expiryDeadline(undefined, 0)).toBeUndefined();
  });
});

describe('verify keeps jti and iat (auth/verify.ts)', () => {
  it('returns them when set, drops an over-long jti', async () => {
    const v = new TokenVerifier(authConfigFromEnv({ IRIS_JWT_SECRET: SECRET }));
    const iat = Math.floor(Date.now() / 1000) - 5;
    expect(await v.verify(await jwt('alice', { jti: 'j1', iat }))).toMatchObject({ user: 'alice', jti: 'j1', iat });
    const long = await v.verify(await jwt('alice', { jti: 'x'.repeat(129) }));
    expect(long.jti).toBeUndefined();
  });
});

describe('refresh (core/refresh.ts over auth/refresh.ts)', () => {
  const check = tokenCheck(new TokenVerifier(authConfigFromEnv({ IRIS_JWT_SECRET: SECRET })));
  const code = async (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof ProtocolError ? e.code : String(e)));

  it('a good token for the same user replaces the connection\'s claims', async () => {
    const w = new World();
    const c = new Sock({ jti: 'old', exp: 1 });
    const exp = Math.floor(Date.now() / 1000) + 7200;
    expect(await refreshConn(c, { t: 'refresh', token: await jwt('alice', { jti: 'new', exp }) }, 'alice', w.storage.sql, check)).toBe(exp);
    expect(c.token).toEqual({ jti: 'new', exp });
  });

  it('refused: another user, a bad signature, an expired token, a revoked one; the old claims stay', async () => {
    const w = new World();
    const c = new Sock({ jti: 'old', exp: 1 });
    const refresh = (token: string) => refreshConn(c, { t: 'refresh', token }, 'alice', w.storage.sql, check);
    expect(await code(refresh(await jwt('bob')))).toBe('token_mismatch');
    expect(await code(refresh(await jwt('alice', {}, 'another-secret')))).toBe('token_invalid');
    expect(await code(refresh(await jwt('alice', { exp: Math.floor(Date.now() / 1000) - 3600 })))).toBe('token_invalid');
    expect(await code(refresh('x'.repeat(9000)))).toBe('token_invalid');
    new Revocations(w.storage.sql, 'alice').revokeToken('gone', Math.floor(Date.now() / 1000) + 3600, Math.floor(Date.now() / 1000));
    expect(await code(refresh(await jwt('alice', { jti: 'gone' })))).toBe('token_revoked');
    expect(c.token).toEqual({ jti: 'old', exp: 1 });
    expect(await code(refreshConn(c, { t: 'refresh', token: 'x' }, 'alice', w.storage.sql, undefined))).toBe('unavailable');
  });
});

describe('admin API, shared part (core/admin.ts)', () => {
  const parse = (method: string, path: string) => parseAdminRequest(method, new URL(`http://x${path}`), NOW);

  it('routes each endpoint, with its method and parameters', () => {
    const ok = (method: string, path: string): AdminRequest => {
      const r = parse(method, path);
      if (isAdminAnswer(r)) throw new Error(`${path}: ${JSON.stringify(r.body)}`);
      return r;
    };
    expect(ok('POST', '/admin/v1/users/alice/revoke?jti=j&exp=5')).toEqual({ op: 'revoke', user: 'alice', jti: 'j', exp: 5 });
    expect(ok('POST', '/admin/v1/users/alice/revoke')).toEqual({ op: 'revoke_before', user: 'alice', before: NOW });
    expect(ok('POST', '/admin/v1/users/alice/revoke?before=7')).toEqual({ op: 'revoke_before', user: 'alice', before: 7 });
    expect(ok('POST', '/admin/v1/users/a%40b/disconnect?device=d1')).toEqual({ op: 'disconnect', user: 'a@b', device: 'd1' });
    expect(ok('GET', '/admin/v1/users/alice/stats')).toEqual({ op: 'user_stats', user: 'alice' });
    expect(ok('GET', '/admin/v1/stats')).toEqual({ op: 'stats' });
  });

  it('answers every other request with a typed error', () => {
    const err = (method: string, path: string) => {
      const r = parse(method, path);
      return isAdminAnswer(r) ? [r.status, r.body['error']] : r;
    };
    expect(err('GET', '/admin/v1/users/alice/revoke')).toEqual([405, 'method_not_allowed']);
    expect(err('POST', '/admin/v1/stats')).toEqual([405, 'method_not_allowed']);
    expect(err('GET', '/admin/v1/users/alice/erase-everything')).toEqual([404, 'not_found']);
    expect(err('GET', '/admin/v1/')).toEqual([404, 'not_found']);
    expect(err('GET', '/admin/v1/users/no%20spaces/stats')).toEqual([400, 'bad_request']);
    expect(err('POST', '/admin/v1/users/alice/revoke?jti=j')).toEqual([400, 'bad_request']);
    expect(err('POST', '/admin/v1/users/alice/revoke?before=-1')).toEqual([400, 'bad_request']);
    expect(err('POST', '/admin/v1/users/alice/disconnect?device=a%20b')).toEqual([400, 'bad_request']);
  });

  it('the credential: off without a secret, 401 for a missing or wrong one', async () => {
    expect((await checkAdmin(undefined, 'Bearer x'))?.status).toBe(ADMIN_ERRORS.admin_disabled);
    expect((await checkAdmin('s3cret', undefined))?.body['error']).toBe('unauthorized');
    expect((await checkAdmin('s3cret', 'Bearer s3cre'))?.body['error']).toBe('unauthorized');
    expect((await checkAdmin('s3cret', 'Basic s3cret'))?.body['error']).toBe('unauthorized');
    expect(await checkAdmin('s3cret', 'Bearer s3cret')).toBeNull();
  });

  it('revoke commits, then closes; disconnect closes one device or all; stats counts', async () => {
    const w = new World();
    const a = new Sock({ jti: 'a', iat: NOW }, device('d1'));
    const b = new Sock({ jti: 'b', iat: NOW }, device('d2'));
    const shard = { storage: w.storage, conns: () => [a, b].filter((c) => c.closed === null), now: () => NOW * 1000, disconnectAll: async () => {}, forget: () => {} };
    expect((await runAdmin({ op: 'revoke', user: 'alice', jti: 'a', exp: NOW + 60 }, shard)).body).toMatchObject({ ok: true, closed: 1 });
    expect(a.closed?.code).toBe(CLOSE_CODES.token_revoked);
    expect((await runAdmin({ op: 'user_stats', user: 'alice' }, shard)).body).toMatchObject({ user: 'alice', connections: 1, online: 1, revocations: 1 });
    expect((await runAdmin({ op: 'disconnect', user: 'alice', device: 'nope' }, shard)).body).toMatchObject({ closed: 0 });
    expect((await runAdmin({ op: 'disconnect', user: 'alice' }, shard)).body).toMatchObject({ closed: 1 });
    expect(b.closed?.code).toBe(CLOSE_CODES.disconnected_by_admin);
    const c = new Sock({ iat: NOW - 1 });
    const r = await runAdmin({ op: 'revoke_before', user: 'alice', before: NOW }, { ...shard, conns: () => [c] });
    expect(r.body).toMatchObject({ before: NOW, closed: 1 });
  });
});

describe('SDK refresh timing (client/token-refresh.ts)', () => {
  const unsigned = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

  it('at 80% of the lifetime, never sooner than a second, never without exp', () => {
    const now = NOW * 1000;
    expect(refreshDelay(unsigned({ iat: NOW, exp: NOW + 100 }), now)).toBe(80_000);
    expect(refreshDelay(unsigned({ iat: NOW - 50, exp: NOW + 50 }), now)).toBe(30_000);
    expect(refreshDelay(unsigned({ exp: NOW + 10 }), now)).toBe(8_000);
    expect(refreshDelay(unsigned({ exp: NOW - 10 }), now)).toBe(1_000);
    expect(refreshDelay(unsigned({ iat: NOW }), now)).toBeNull();
    expect(refreshDelay('garbage', now)).toBeNull();
  });
});

describe('SDK refresher (client/token-refresh.ts)', () => {
  afterEach(() => void vi.useRealTimers());
  const unsigned = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`;

  function harness(tokens: string[]) {
    const written: ClientFrame[] = [];
    const adopted: string[] = [];
    const errors: IrisError[] = [];
    const port = { getToken: () => tokens.shift() ?? 'none', write: (f: ClientFrame) => void written.push(f), adopted: (t: string) => void adopted.push(t), error: (e: IrisError) => void errors.push(e) };
    return { written, adopted, errors, port };
  }

  it('asks the callback at 80%, sends refresh, adopts the token on refreshed; reports a refusal; stops on unknown_type', async () => {
    vi.useFakeTimers({ now: NOW * 1000 });
    const first = unsigned({ iat: NOW, exp: NOW + 10 });
    const second = unsigned({ iat: NOW + 8, exp: NOW + 3600 });
    const h = harness([second, 'third']);
    const r = TokenRefresher.start(first, h.port.getToken, h.port)!;
    await vi.advanceTimersByTimeAsync(7_999);
    expect(h.written).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.written).toEqual([{ t: 'refresh', token: second }]);
    expect(r.onFrame({ t: 'refreshed', exp: NOW + 3600 })).toBe(true);
    expect(h.adopted).toEqual([second]);
    // An error frame that is not about a refresh in flight is not the refresher's.
    expect(r.onFrame({ t: 'error', code: 'token_revoked', message: 'x' })).toBe(false);
    await vi.advanceTimersByTimeAsync(0.8 * 3592 * 1000);
    expect(h.written.at(-1)).toEqual({ t: 'refresh', token: 'third' });
    expect(r.onFrame({ t: 'error', code: 'token_revoked', message: 'revoked' })).toBe(true);
    expect(h.errors.map((e) => [e.code, e.reason])).toEqual([['auth_failed', 'token_revoked']]);
    r.stop();
    expect(TokenRefresher.start(first, 'a string token', h.port)).toBeNull();
    const old = TokenRefresher.start(first, () => second, h.port)!;
    await vi.advanceTimersByTimeAsync(8_000);
    expect(old.onFrame({ t: 'error', code: 'unknown_type', message: 'refresh' })).toBe(true);
    const n = h.written.length;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(h.written.length).toBe(n);
  });
});

