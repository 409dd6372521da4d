import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose';
import { ID_PATTERN } from '../protocol/limits.js';
import type { AuthConfig } from './config.js';
import { AuthError } from './errors.js';

const ASYMMETRIC = ['RS256', 'ES256', 'EdDSA'];

/**
 * The key set at IRIS_JWKS_URL, with its failures told apart from the token's. A key set that could not be
 * fetched (timeout, network, not 200, not a key set) is the server's problem: 503 `unavailable`, which a client
 * retries, not a 401 that tells it to throw its token away. Failing to match the token to a key passes through.
 */
function remoteKeySet(url: URL): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(url);
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (e) {
      if (isFetchFailure(e)) throw new AuthError('unavailable', 'the key set to verify the token could not be fetched; retry', { cause: e });
      throw e;
    }
  };
}

function isFetchFailure(e: unknown): boolean {
  if (e instanceof errors.JWKSTimeout || e instanceof errors.JWKSInvalid) return true;
  // jose's generic error is what its fetch throws for a non-200 or non-JSON answer; its subclasses are about the
  // token (no matching key, unsupported alg). Anything not from jose came from fetch itself (DNS, refused, TLS).
  if (e instanceof errors.JOSEError) return e.code === 'ERR_JOSE_GENERIC';
  return true;
}

export interface Identity {
  user: string;
  /** Token expiry, seconds since epoch. */
  exp?: number;
  /** Token id (`jti`), when the issuer set one: what a single-token revocation names (core/revocation.ts). */
  jti?: string;
  /** Issued at (`iat`), seconds since epoch: a "log out everywhere" revokes every token issued before a time. */
  iat?: number;
}

/**
 * Verifies a JWT and returns the user it names. The algorithm is chosen by which keys are configured, never
 * by the token alone: HS256 only with a secret, RS256/ES256/EdDSA only with a JWKS, and `none` never.
 * Shared by the edge Worker and the on-prem listener, so both accept exactly the same tokens.
 */
export class TokenVerifier {
  private readonly secret?: Uint8Array;
  private readonly jwks?: JWTVerifyGetKey;

  constructor(private readonly cfg: AuthConfig) {
    if (cfg.secret !== undefined) this.secret = new TextEncoder().encode(cfg.secret);
    if (cfg.jwks !== undefined) this.jwks = createLocalJWKSet(cfg.jwks);
    else if (cfg.jwksUrl !== undefined) this.jwks = remoteKeySet(new URL(cfg.jwksUrl));
  }

  get configured(): boolean {
    return this.secret !== undefined || this.jwks !== undefined;
  }

  async verify(token: string): Promise<Identity> {
    if (!this.configured) throw new AuthError('auth_not_configured', 'no JWT secret or JWKS configured');
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch (e) {
      throw new AuthError('malformed_token', 'token is not a JWT', { cause: e });
    }
    const opts: JWTVerifyOptions = { clockTolerance: this.cfg.clockToleranceSec, requiredClaims: ['sub', 'exp'] };
    if (this.cfg.issuer !== undefined) opts.issuer = this.cfg.issuer;
    if (this.cfg.audience !== undefined) opts.audience = this.cfg.audience;
    let payload;
    try {
      if (alg === 'HS256' && this.secret) {
        ({ payload } = await jwtVerify(token, this.secret, { ...opts, algorithms: ['HS256'] }));
      } else if (alg !== undefined && ASYMMETRIC.includes(alg) && this.jwks) {
        ({ payload } = await jwtVerify(token, this.jwks, { ...opts, algorithms: ASYMMETRIC }));
      } else {
        throw new AuthError('unsupported_algorithm', `algorithm ${String(alg)} is not accepted here`);
      }
    } catch (e) {
      throw toAuthError(e);
    }
    const sub = payload.sub;
    if (typeof sub !== 'string' || !ID_PATTERN.test(sub)) {
      throw new AuthError('invalid_subject', 'sub must be 1-64 chars of [A-Za-z0-9._@+=-]');
    }
    const id: Identity = { user: sub };
    if (payload.exp !== undefined) id.exp = payload.exp;
    // Only a short string jti is kept: it is stored per revocation and carried with every connection.
    if (typeof payload.jti === 'string' && payload.jti.length > 0 && payload.jti.length <= 128) id.jti = payload.jti;
    if (typeof payload.iat === 'number' && Number.isFinite(payload.iat)) id.iat = payload.iat;
    return id;
  }
}

/** Maps a jose error to the refusal it means. The jose error stays as `cause`: its code and claim are for logs. */
function toAuthError(e: unknown): AuthError {
  if (e instanceof AuthError) return e;
  const cause = { cause: e };
  if (e instanceof errors.JWTExpired) return new AuthError('token_expired', 'token has expired', cause);
  if (e instanceof errors.JWTClaimValidationFailed) {
    if (e.claim === 'nbf') return new AuthError('token_not_yet_valid', 'token is not valid yet', cause);
    if (e.claim === 'sub') return new AuthError('invalid_subject', 'token has no subject', cause);
    return new AuthError('claim_invalid', `claim "${e.claim}" is not acceptable (${e.reason})`, cause);
  }
  if (e instanceof errors.JWSSignatureVerificationFailed || e instanceof errors.JWKSNoMatchingKey) {
    return new AuthError('invalid_signature', 'token signature does not verify', cause);
  }
  if (e instanceof errors.JOSEAlgNotAllowed || e instanceof errors.JOSENotSupported) {
    return new AuthError('unsupported_algorithm', 'token algorithm is not accepted', cause);
  }
  return new AuthError('malformed_token', e instanceof Error ? e.message : 'token could not be read', cause);
}
