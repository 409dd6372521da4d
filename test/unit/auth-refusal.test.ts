import { describe, expect, it } from 'vitest';
import { REFUSALS, isRefusalCode, refusal, refusalBody, refusalHeaders, type Refusal, type RefusalCode } from '../../auth/index.js';

describe('refusal responses', () => {
  it('let a page of any origin read status, JSON body and Retry-After (the browser SDK asks why a handshake failed)', () => {
    const h = refusalHeaders({ status: 429, code: 'too_many_connects', message: 'slow down', headers: { 'retry-after': '3' } });
    expect(h['access-control-allow-origin']).toBe('*');
    expect(h['access-control-expose-headers']!.split(',').map((x) => x.trim())).toContain('retry-after');
    expect(h['retry-after']).toBe('3');
    expect(h['content-type']).toBe('application/json');
    const u = refusalHeaders({ status: 401, code: 'invalid_signature', message: 'bad signature' });
    expect(u['access-control-allow-origin']).toBe('*');
    expect(u['www-authenticate']).toContain('invalid_signature');
    expect(JSON.parse(refusalBody({ status: 401, code: 'invalid_signature', message: 'bad signature' }))).toEqual({ error: 'invalid_signature', message: 'bad signature' });
  });

  it('only 401s carry WWW-Authenticate', () => {
    for (const code of Object.keys(REFUSALS) as RefusalCode[]) {
      const r = refusal(code, 'm');
      expect('www-authenticate' in refusalHeaders(r), code).toBe(r.status === 401);
    }
  });

  it('never put the cause in the body: it is for logs', () => {
    const r = refusal('bad_request', 'malformed HTTP request', { cause: new Error('HPE_INVALID_METHOD at byte 3 of secret-ish input') });
    expect(r.cause).toBeInstanceOf(Error);
    expect(refusalBody(r)).toBe('{"error":"bad_request","message":"malformed HTTP request"}');
  });
});

describe('the refusal vocabulary (auth/refusals.ts)', () => {
  it('refusal() takes the status from REFUSALS and Retry-After from retryAfter', () => {
    for (const code of Object.keys(REFUSALS) as RefusalCode[]) expect(refusal(code, 'm').status, code).toBe(REFUSALS[code]);
    expect(refusal('unavailable', 'retry', { retryAfter: 1 })).toEqual({ status: 503, code: 'unavailable', message: 'retry', headers: { 'retry-after': '1' } });
    expect(refusal('not_found', 'no such endpoint')).toEqual({ status: 404, code: 'not_found', message: 'no such endpoint' });
  });

  it('has the on-prem 503s and the misconfiguration 503 in it', () => {
    for (const c of ['going_away', 'unavailable', 'server_full', 'misconfigured', 'auth_not_configured']) expect(REFUSALS[c as RefusalCode], c).toBe(503);
    expect(isRefusalCode('misconfigured')).toBe(true);
    expect(isRefusalCode('toString')).toBe(false);
    expect(isRefusalCode('teapot')).toBe(false);
  });

  it('does not type-check a status that is not its code’s (npm run typecheck fails on an unused directive)', () => {
    // @ts-expect-error 503 is not the status of not_found
    const wrong: Refusal = { status: 503, code: 'not_found', message: 'x' };
    // @ts-expect-error not a code of the vocabulary
    const unknown: Refusal = { status: 418, code: 'teapot', message: 'x' };
    const right: Refusal = { status: 503, code: 'server_full', message: 'x' };
    // Narrowing on code gives the literal status.
    const status: 503 = right.code === 'server_full' ? right.status : 503;
    expect([wrong.code, unknown.code, status]).toEqual(['not_found', 'teapot', 503]);
  });
});
