import { SignJWT, errors, importJWK, type JWK, type JWTPayload } from 'jose';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthError, KEY_SET_RETRY_AFTER, REFUSALS, TokenVerifier, authConfigFromEnv, type AuthErrorCode } from '../../auth/index.js';

/**
 * auth/verify.ts on its own: which tokens the verifier accepts, which AuthError code each refused token gets,
 * and that the library's error is kept as `cause`. The edge and on-prem token matrices run the same verifier
 * through their adapters; this pins the mapping itself, including the cases the adapters' tests do not reach
 * (algorithm confusion, missing claims, an unreachable JWKS URL).
 */

const KEYS = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/test-keys.json'), 'utf8')) as { private: Record<string, JWK>; jwks: { keys: JWK[] } };
const SECRET = 'unit-secret';
const ISSUER = 'https://issuer.unit';
const AUDIENCE = 'iris-unit';
const now = () => Math.floor(Date.now() / 1000);

interface Claims {
  sub?: string | null;
  exp?: number | null;
  nbf?: number;
  iss?: string;
  aud?: string;
}

function payload(c: Claims): JWTPayload {
  const p: JWTPayload = { iss: c.iss ?? ISSUER, aud: c.aud ?? AUDIENCE };
  if (c.sub !== null) p.sub = c.sub ?? 'alice';
  if (c.exp !== null) p.exp = now() + (c.exp ?? 600);
  if (c.nbf !== undefined) p.nbf = now() + c.nbf;
  return p;
}

function hs256(c: Claims = {}, secret: string | Uint8Array = SECRET): Promise<string> {
  const key = typeof secret === 'string' ? new TextEncoder().encode(secret) : secret;
  return new SignJWT(payload(c)).setProtectedHeader({ alg: 'HS256' }).sign(key);
}

async function signed(alg: 'RS256' | 'ES256' | 'EdDSA' | 'stray', c: Claims = {}, kid?: string): Promise<string> {
  const jwk = KEYS.private[alg]!;
  return new SignJWT(payload(c)).setProtectedHeader({ alg: jwk.alg!, kid: kid ?? jwk.kid! }).sign(await importJWK(jwk, jwk.alg));
}

function unsigned(c: Claims = {}): string {
  const b64 = (x: object) => Buffer.from(JSON.stringify(x)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64(payload(c))}.`;
}

const withSecret = () => new TokenVerifier(authConfigFromEnv({ IRIS_JWT_SECRET: SECRET, IRIS_JWT_ISSUER: ISSUER, IRIS_JWT_AUDIENCE: AUDIENCE, IRIS_JWT_CLOCK_TOLERANCE: '5' }));
const withJwks = () => new TokenVerifier(authConfigFromEnv({ IRIS_JWKS: JSON.stringify(KEYS.jwks), IRIS_JWT_ISSUER: ISSUER, IRIS_JWT_AUDIENCE: AUDIENCE }));

async function refusedWith(v: TokenVerifier, token: string): Promise<AuthError> {
  const e: unknown = await v.verify(token).then(
    () => null,
    (x: unknown) => x,
  );
  if (!(e instanceof AuthError)) throw new Error(`expected an AuthError, got ${e === null ? 'acceptance' : String(e)}`);
  // Whatever the code, the status is the vocabulary's: one table for both.
  expect(e.status).toBe(REFUSALS[e.code]);
  return e;
}

describe('TokenVerifier accepts', () => {
  it('HS256 with the configured secret, and returns the subject and expiry', async () => {
    const exp = now() + 600;
    const id = await withSecret().verify(await hs256({ exp: 600 }));
    expect(id.user).toBe('alice');
    expect(Math.abs(id.exp! - exp)).toBeLessThanOrEqual(1);
  });

  it('RS256, ES256 and EdDSA signed by a key of the JWKS', async () => {
    for (const alg of ['RS256', 'ES256', 'EdDSA'] as const) expect((await withJwks().verify(await signed(alg, { sub: `u-${alg}` }))).user, alg).toBe(`u-${alg}`);
  });

  it('a token expired by less than the clock tolerance', async () => {
    expect((await withSecret().verify(await hs256({ exp: -2 }))).user).toBe('alice');
  });
});

describe('TokenVerifier refuses, with the code that says why and the library error as cause', () => {
  const cases: [string, () => Promise<[TokenVerifier, string]>, AuthErrorCode, (new (...a: never[]) => Error) | null][] = [
    ['not a JWT at all', async () => [withSecret(), 'not-a-jwt'], 'malformed_token', Error],
    ['alg none', async () => [withSecret(), unsigned()], 'unsupported_algorithm', null],
    ['an RS256 token where only a secret is configured', async () => [withSecret(), await signed('RS256')], 'unsupported_algorithm', null],
    // Algorithm confusion: HS256 "signed" with public key material must never be checked against the JWKS.
    ['an HS256 token where only a JWKS is configured', async () => [withJwks(), await hs256({}, KEYS.jwks.keys[0]!.n!)], 'unsupported_algorithm', null],
    ['HS256 signed with another secret', async () => [withSecret(), await hs256({}, 'someone-else')], 'invalid_signature', errors.JWSSignatureVerificationFailed],
    ['ES256 signed by a key outside the JWKS, naming a kid of the JWKS', async () => [withJwks(), await signed('stray')], 'invalid_signature', errors.JWSSignatureVerificationFailed],
    ['ES256 naming a kid the JWKS does not have', async () => [withJwks(), await signed('stray', {}, 'no-such-kid')], 'invalid_signature', errors.JWKSNoMatchingKey],
    ['expired beyond the tolerance', async () => [withSecret(), await hs256({ exp: -60 })], 'token_expired', errors.JWTExpired],
    ['not valid yet', async () => [withSecret(), await hs256({ nbf: 120 })], 'token_not_yet_valid', errors.JWTClaimValidationFailed],
    ['another issuer', async () => [withSecret(), await hs256({ iss: 'https://elsewhere' })], 'claim_invalid', errors.JWTClaimValidationFailed],
    ['another audience', async () => [withSecret(), await hs256({ aud: 'not-iris' })], 'claim_invalid', errors.JWTClaimValidationFailed],
    ['no exp (tokens must expire)', async () => [withSecret(), await hs256({ exp: null })], 'claim_invalid', errors.JWTClaimValidationFailed],
    ['no sub', async () => [withSecret(), await hs256({ sub: null })], 'invalid_subject', errors.JWTClaimValidationFailed],
    ['a sub outside the user id grammar', async () => [withSecret(), await hs256({ sub: 'has space' })], 'invalid_subject', null],
    ['a sub longer than 64 characters', async () => [withSecret(), await hs256({ sub: 'a'.repeat(65) })], 'invalid_subject', null],
  ];

  it.each(cases)('%s', async (_name, make, code, causeType) => {
    const [v, token] = await make();
    const e = await refusedWith(v, token);
    expect(e.code).toBe(code);
    if (causeType) expect(e.cause).toBeInstanceOf(causeType);
  });

  it('says which claim failed, from the kept cause', async () => {
    const e = await refusedWith(withSecret(), await hs256({ iss: 'https://elsewhere' }));
    expect((e.cause as errors.JWTClaimValidationFailed).claim).toBe('iss');
    expect(e.message).toContain('"iss"');
  });

  it('every token, when no key is configured: 503 auth_not_configured, before reading it', async () => {
    const v = new TokenVerifier(authConfigFromEnv({}));
    expect(v.configured).toBe(false);
    for (const t of ['not-a-jwt', await hs256()]) expect((await refusedWith(v, t)).code).toBe('auth_not_configured');
  });
});

describe('a key set fetched from IRIS_JWKS_URL', () => {
  // One local server: /ok serves the JWKS, /500 fails, /text is not JSON, /empty is JSON but not a key set.
  let server: Server;
  let base = '';
  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/ok') return res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(KEYS.jwks));
      if (req.url === '/text') return res.writeHead(200).end('<html>maintenance</html>');
      if (req.url === '/empty') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":"none"}');
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const at = (url: string) => new TokenVerifier(authConfigFromEnv({ IRIS_JWKS_URL: url, IRIS_JWT_ISSUER: ISSUER, IRIS_JWT_AUDIENCE: AUDIENCE }));

  it('verifies with it, and a token whose kid it lacks is still invalid_signature', async () => {
    expect((await at(`${base}/ok`).verify(await signed('ES256'))).user).toBe('alice');
    expect((await refusedWith(at(`${base}/ok`), await signed('stray', {}, 'no-such-kid'))).code).toBe('invalid_signature');
  });

  it('one that cannot be fetched is the server\'s problem: 503 unavailable with Retry-After, the fetch error as cause', async () => {
    // A port nobody listens on: bind one, then close it.
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    for (const url of [`${base}/500`, `${base}/text`, `${base}/empty`, `http://127.0.0.1:${port}/jwks.json`]) {
      const e = await refusedWith(at(url), await signed('ES256'));
      expect(e.code, url).toBe('unavailable');
      expect(e.status).toBe(503);
      expect(e.cause, url).toBeInstanceOf(Error);
      expect(e.toRefusal().headers).toEqual({ 'retry-after': String(KEY_SET_RETRY_AFTER) });
    }
  });
});

describe('AuthError', () => {
  it('keeps its cause, and its refusal keeps the AuthError (for logs) but sends only code and message', () => {
    const root = new errors.JWTExpired('"exp" claim timestamp check failed', {}, 'exp', 'check_failed');
    const e = new AuthError('token_expired', 'token has expired', { cause: root });
    expect(e.cause).toBe(root);
    expect(e.status).toBe(401);
    const r = e.toRefusal();
    expect(r).toMatchObject({ status: 401, code: 'token_expired', message: 'token has expired' });
    expect(r.cause).toBe(e);
  });
});
