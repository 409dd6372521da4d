import { SELF, env } from 'cloudflare:test';
import { describe, expect, it } from 'vitest';
import { MAX_TOKEN_LENGTH } from '../../auth/index.js';
import type { Env } from '../../durable-objects/env.js';
import worker from '../../workers/edge.js';
import { token, unsignedToken, upgradeRequest } from './helpers.js';

/** Every refusal happens at the edge, as an HTTP status, before a WebSocket exists. */

async function refused(res: Response, status: number, code: string): Promise<void> {
  expect(res.status).toBe(status);
  expect(res.webSocket).toBeNull();
  expect(await res.json()).toMatchObject({ error: code });
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

describe('token matrix', () => {
  it('accepts HS256, RS256, ES256 and EdDSA tokens', async () => {
    for (const alg of ['HS256', 'RS256', 'ES256', 'EdDSA'] as const) {
      const res = await upgradeRequest(bearer(await token(`user-${alg}`, { alg })));
      expect(res.status, alg).toBe(101);
      expect(res.headers.get('Sec-WebSocket-Protocol')).toBe('iris.v1');
      res.webSocket!.accept();
      res.webSocket!.close();
    }
  });

  it('accepts the token as a bearer subprotocol (never echoed) or a query parameter', async () => {
    const viaProto = await upgradeRequest({ 'Sec-WebSocket-Protocol': `iris.v1, bearer.${await token('bob')}` });
    expect(viaProto.status).toBe(101);
    expect(viaProto.headers.get('Sec-WebSocket-Protocol')).toBe('iris.v1');
    viaProto.webSocket!.accept();
    viaProto.webSocket!.close();
    const viaQuery = await upgradeRequest({}, `?access_token=${await token('bob')}`);
    expect(viaQuery.status).toBe(101);
    viaQuery.webSocket!.accept();
    viaQuery.webSocket!.close();
  });

  it('missing token: 401', async () => refused(await upgradeRequest(), 401, 'missing_token'));
  it('malformed token: 401', async () => refused(await upgradeRequest(bearer('not.a.jwt')), 401, 'malformed_token'));
  it('empty bearer: 401', async () => refused(await upgradeRequest({ Authorization: 'Bearer' }), 401, 'missing_token'));
  it('alg none: 401', async () => refused(await upgradeRequest(bearer(unsignedToken('alice'))), 401, 'unsupported_algorithm'));
  it('HS256 with the wrong secret: 401', async () => {
    const t = await token('alice');
    const forged = t.slice(0, t.lastIndexOf('.') + 1) + 'AAAA' + t.slice(t.lastIndexOf('.') + 5);
    await refused(await upgradeRequest(bearer(forged)), 401, 'invalid_signature');
  });
  it('ES256 signed by a key outside the JWKS: 401', async () =>
    refused(await upgradeRequest(bearer(await token('alice', { alg: 'stray' }))), 401, 'invalid_signature'));
  it('expired beyond the clock tolerance: 401', async () =>
    refused(await upgradeRequest(bearer(await token('alice', { exp: -60 }))), 401, 'token_expired'));
  it('expired within the clock tolerance: accepted', async () => {
    const res = await upgradeRequest(bearer(await token('alice', { exp: -2 })));
    expect(res.status).toBe(101);
    res.webSocket!.accept();
    res.webSocket!.close();
  });
  it('not yet valid: 401', async () =>
    refused(await upgradeRequest(bearer(await token('alice', { nbf: 120 }))), 401, 'token_not_yet_valid'));
  it('wrong issuer: 403', async () =>
    refused(await upgradeRequest(bearer(await token('alice', { iss: 'https://evil.test' }))), 403, 'claim_invalid'));
  it('wrong audience: 403', async () =>
    refused(await upgradeRequest(bearer(await token('alice', { aud: 'other-app' }))), 403, 'claim_invalid'));
  it('no subject: 403', async () => refused(await upgradeRequest(bearer(await token(undefined))), 403, 'invalid_subject'));
  it('subject outside the id charset: 403', async () =>
    refused(await upgradeRequest(bearer(await token('alice:admin'))), 403, 'invalid_subject'));
  it('subject different from the requested user: 403', async () =>
    refused(await upgradeRequest(bearer(await token('alice')), '?user=bob'), 403, 'user_mismatch'));
});

describe('token size', () => {
  /** A valid token of exactly `length` characters: padded with a claim. */
  async function sized(user: string, length: number): Promise<string> {
    const base = (await token(user, { claims: { pad: '' } })).length;
    // Base64url grows by 4 characters per 3 bytes of claim; pad to just under, then trim by re-signing.
    let pad = Math.floor(((length - base) * 3) / 4);
    for (;;) {
      const t = await token(user, { claims: { pad: 'x'.repeat(pad) } });
      if (t.length <= length) return t;
      pad--;
    }
  }

  it('refuses a token longer than MAX_TOKEN_LENGTH with 431 in each of the three places, before verifying it', async () => {
    const big = await sized('big', MAX_TOKEN_LENGTH + 100);
    expect(big.length).toBeGreaterThan(MAX_TOKEN_LENGTH);
    await refused(await upgradeRequest(bearer(big)), 431, 'token_too_large');
    await refused(await upgradeRequest({ 'Sec-WebSocket-Protocol': `iris.v1, bearer.${big}` }), 431, 'token_too_large');
    await refused(await upgradeRequest({}, `?access_token=${big}`), 431, 'token_too_large');
    // Refused on size alone: 100 KB of garbage gets the same answer, not a verification error.
    await refused(await upgradeRequest(bearer('x'.repeat(100_000))), 431, 'token_too_large');
  });

  it('accepts a valid token of exactly MAX_TOKEN_LENGTH characters', async () => {
    const t = await sized('edge', MAX_TOKEN_LENGTH);
    expect(t.length).toBeGreaterThan(MAX_TOKEN_LENGTH - 4);
    const res = await upgradeRequest(bearer(t));
    expect(res.status).toBe(101);
    res.webSocket!.accept();
    res.webSocket!.close();
  });
});

describe('upgrade checks', () => {
  it('a plain GET: 401 without a token (so a client can learn why its handshake failed), 426 with one', async () => {
    await refused(await SELF.fetch('http://iris.test/v1/connect'), 401, 'missing_token');
    await refused(await SELF.fetch('http://iris.test/v1/connect', { headers: bearer(await token('alice', { exp: -60 })) }), 401, 'token_expired');
    await refused(await SELF.fetch('http://iris.test/v1/connect', { headers: bearer(await token('alice')) }), 426, 'upgrade_required');
  });
  it('a POST: 405', async () =>
    refused(await SELF.fetch('http://iris.test/v1/connect', { method: 'POST', headers: bearer(await token('alice')) }), 405, 'method_not_allowed'));
  it('without the iris.v1 subprotocol: 400', async () =>
    refused(await upgradeRequest({ 'Sec-WebSocket-Protocol': 'chat', ...bearer(await token('alice')) }), 400, 'unsupported_protocol'));
  it('unknown path: 404 not_found (a refusal like the others: JSON, readable cross-origin), healthz: 200', async () => {
    const res = await SELF.fetch('http://iris.test/nope');
    await refused(res, 404, 'not_found');
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(await (await SELF.fetch('http://iris.test/healthz')).json()).toEqual({ ok: true });
  });
  it('invalid auth settings: 503 misconfigured on connect and on /healthz, not an uncaught exception', async () => {
    // The real handler with its own env: IRIS_JWKS that is not JSON (authConfigFromEnv throws on it).
    const e = { USERS: env.USERS, IRIS_JWKS: '{not json', IRIS_JWT_SECRET: 'test-secret' } as unknown as Env;
    const connect = await worker.fetch(new Request('http://iris.test/v1/connect', { headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', ...bearer(await token('alice')) } }), e);
    await refused(connect, 503, 'misconfigured');
    // The JSON parser's words may quote the setting; the client gets none of them.
    const body = (await (await worker.fetch(new Request('http://iris.test/v1/connect'), e)).json()) as { message: string };
    expect(body.message).not.toContain('not json');
    await refused(await worker.fetch(new Request('http://iris.test/healthz'), e), 503, 'misconfigured');
    // The isolate's verifier is rebuilt when the settings are fixed.
    expect(await (await worker.fetch(new Request('http://iris.test/healthz'), { ...e, IRIS_JWKS: env['IRIS_JWKS'] } as Env)).json()).toEqual({ ok: true });
  });
  it('the shard itself refuses a request without the identity only the edge sets: 400 bad_request', async () => {
    const stub = env.USERS.get(env.USERS.idFromName('no-edge'));
    await refused(await stub.fetch(new Request('http://shard/v1/connect', { headers: { Upgrade: 'websocket' } })), 400, 'bad_request');
    await refused(await stub.fetch(new Request('http://shard/v1/connect', { headers: { 'X-Iris-User': 'no-edge' } })), 400, 'bad_request');
  });
  it('a client-supplied identity header is overwritten by the verified subject', async () => {
    const res = await upgradeRequest({ ...bearer(await token('mallory')), 'X-Iris-User': 'alice' });
    expect(res.status).toBe(101);
    const ws = res.webSocket!;
    ws.accept();
    const welcome = new Promise<string>((r) => ws.addEventListener('message', (e) => r(e.data as string)));
    ws.send(JSON.stringify({ t: 'hello', device: 'd1' }));
    expect(JSON.parse(await welcome)).toMatchObject({ t: 'welcome', user: 'mallory' });
    ws.close();
  });
  it('per-IP connect rate limit: 429 with retry-after, other addresses unaffected', async () => {
    let last: Response | null = null;
    // The local limiter counts in fixed windows; 1,400 tries reach the limit even if one window boundary passes.
    // Up to 1,400 requests take seconds on a loaded machine: the timeout (here and below) bounds a hang, not speed.
    for (let i = 0; i < 1400; i++) {
      last = await upgradeRequest({ 'CF-Connecting-IP': '203.0.113.9' });
      if (last.status === 429) break;
    }
    expect(last!.status).toBe(429);
    expect(last!.headers.get('retry-after')).toBe('60');
    const other = await upgradeRequest({ 'CF-Connecting-IP': '203.0.113.10' });
    expect(other.status).toBe(401);
  }, 60_000);
  it('a client-sent CF-Connecting-IP does not dodge the limit on a local run (loopback host)', async () => {
    // Under wrangler dev the header is whatever the client sent; a fresh value per request must not be a
    // fresh bucket. Requests addressed to a loopback host cannot have come through Cloudflare's edge.
    let last: Response | null = null;
    let i = 0;
    for (; i < 1400; i++) {
      last = await SELF.fetch('http://127.0.0.1:8787/v1/connect', {
        headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', 'CF-Connecting-IP': `198.51.100.${i % 250}` },
      });
      if (last.status === 429) break;
    }
    expect(last!.status).toBe(429);
    expect(await last!.json()).toMatchObject({ error: 'too_many_connects' });
  }, 60_000);
});
