import { describe, expect, it } from 'vitest';
import { refusalBody, refusalHeaders } from '../../auth/index.js';

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
});
