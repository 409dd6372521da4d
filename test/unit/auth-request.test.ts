import { describe, expect, it } from 'vitest';
import { MAX_TOKEN_LENGTH, TokenVerifier, authConfigFromEnv, authorizeUpgrade, checkUpgrade, subprotocols, tokenFromRequest } from '../../auth/index.js';

/**
 * auth/request.ts and auth/upgrade.ts on their own: where a token is taken from (PROTOCOL.md 3.1), the upgrade
 * header checks, and the decisions of authorizeUpgrade that the doc-order test does not pin (the per-IP limit's
 * Retry-After, the token length bound at exactly MAX_TOKEN_LENGTH, errors that are not refusals).
 */

const headers = (h: Record<string, string>) => (n: string) => h[n.toLowerCase()] ?? null;
const url = (q = '') => new URL(`http://iris.test/v1/connect${q}`);

describe('tokenFromRequest', () => {
  it('prefers Authorization, then the bearer subprotocol, then ?access_token', () => {
    const all = { authorization: 'Bearer from-header', 'sec-websocket-protocol': 'iris.v1, bearer.from-proto' };
    expect(tokenFromRequest(headers(all), url('?access_token=from-query'))).toBe('from-header');
    expect(tokenFromRequest(headers({ 'sec-websocket-protocol': 'iris.v1, bearer.from-proto' }), url('?access_token=from-query'))).toBe('from-proto');
    expect(tokenFromRequest(headers({}), url('?access_token=from-query'))).toBe('from-query');
    expect(tokenFromRequest(headers({}), url())).toBeNull();
  });

  it('takes the Bearer scheme in any case, and nothing else from Authorization', () => {
    expect(tokenFromRequest(headers({ authorization: 'bearer abc' }), url())).toBe('abc');
    expect(tokenFromRequest(headers({ authorization: '  Bearer   abc  ' }), url())).toBe('abc');
    // A non-Bearer Authorization header counts as no token: the other places are not consulted.
    for (const h of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'Token abc']) {
      expect(tokenFromRequest(headers({ authorization: h }), url('?access_token=from-query')), h).toBe('');
    }
  });

  it('splits the subprotocol list on commas and whitespace, dropping empty entries', () => {
    expect(subprotocols(headers({ 'sec-websocket-protocol': ' iris.v1 ,, bearer.x ,' }))).toEqual(['iris.v1', 'bearer.x']);
    expect(subprotocols(headers({}))).toEqual([]);
  });
});

describe('checkUpgrade', () => {
  const ok = { upgrade: 'websocket', 'sec-websocket-protocol': 'chat, iris.v1' };
  it('passes a GET WebSocket upgrade offering iris.v1 (among others, any case of Upgrade)', () => {
    expect(checkUpgrade('GET', headers(ok))).toBeNull();
    expect(checkUpgrade('GET', headers({ ...ok, upgrade: 'WebSocket' }))).toBeNull();
  });
  it('refuses the method, then the upgrade, then the subprotocol', () => {
    expect(checkUpgrade('POST', headers({}))).toMatchObject({ status: 405, code: 'method_not_allowed' });
    expect(checkUpgrade('GET', headers({ 'sec-websocket-protocol': 'iris.v1' }))).toMatchObject({ status: 426, code: 'upgrade_required' });
    expect(checkUpgrade('GET', headers({ upgrade: 'websocket', 'sec-websocket-protocol': 'iris.v2' }))).toMatchObject({ status: 400, code: 'unsupported_protocol' });
  });
});

describe('authorizeUpgrade', () => {
  const verifier = new TokenVerifier(authConfigFromEnv({ IRIS_JWT_SECRET: 'unit-secret' }));
  const req = (token: string) => ({ method: 'GET', url: url(), header: headers({ authorization: `Bearer ${token}`, upgrade: 'websocket', 'sec-websocket-protocol': 'iris.v1' }), ip: '192.0.2.7' });

  it('passes the client address to the connect limit and turns its wait into Retry-After', async () => {
    const asked: string[] = [];
    const r = await authorizeUpgrade(req('x'), { verifier, connectLimit: (ip) => (asked.push(ip), 17) });
    expect(asked).toEqual(['192.0.2.7']);
    expect(r).toMatchObject({ status: 429, code: 'too_many_connects', headers: { 'retry-after': '17' } });
  });

  it('bounds the token at exactly MAX_TOKEN_LENGTH characters, before verifying it', async () => {
    let verified = 0;
    const counting = { verify: (t: string) => (verified++, verifier.verify(t)) } as TokenVerifier;
    expect(await authorizeUpgrade(req('x'.repeat(MAX_TOKEN_LENGTH + 1)), { verifier: counting })).toMatchObject({ status: 431, code: 'token_too_large' });
    expect(verified).toBe(0);
    expect(await authorizeUpgrade(req('x'.repeat(MAX_TOKEN_LENGTH)), { verifier: counting })).toMatchObject({ status: 401, code: 'malformed_token' });
    expect(verified).toBe(1);
  });

  it('a refused token becomes a refusal whose cause is the AuthError; any other failure is thrown, not refused', async () => {
    const r = await authorizeUpgrade(req('not-a-jwt'), { verifier });
    expect(r).toMatchObject({ status: 401, code: 'malformed_token' });
    expect((r as { cause?: unknown }).cause).toMatchObject({ name: 'AuthError', code: 'malformed_token' });
    const broken = { verify: () => Promise.reject(new TypeError('bug')) } as unknown as TokenVerifier;
    await expect(authorizeUpgrade(req('x'), { verifier: broken })).rejects.toThrow('bug');
  });
});
