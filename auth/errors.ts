import { REFUSALS, refusal, type RefusalOf } from './refusals.js';

/**
 * Why a token was refused: the part of the refusal vocabulary (auth/refusals.ts) that TokenVerifier decides.
 * Each maps to one HTTP status there; the body names the code so a client can tell "get a new token" (401)
 * from "this token may not do that" (403).
 */
export type AuthErrorCode =
  | 'missing_token'
  | 'token_too_large'
  | 'malformed_token'
  | 'invalid_signature'
  | 'unsupported_algorithm'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'token_revoked'
  | 'claim_invalid'
  | 'invalid_subject'
  | 'user_mismatch'
  | 'auth_not_configured'
  /** The key set at IRIS_JWKS_URL could not be fetched: the server's fault, retried after KEY_SET_RETRY_AFTER. */
  | 'unavailable';

/** Retry-After (seconds) when the key set could not be fetched: about one more fetch attempt (jose waits 5 s). */
export const KEY_SET_RETRY_AFTER = 5;

export type AuthErrorStatus = (typeof REFUSALS)[AuthErrorCode];

/**
 * Thrown by the verifier. `cause` keeps the error it was made from (jose's JWTExpired, JWSInvalid, ...) so a
 * log can say what the library saw; only `code` and `message` reach the client.
 */
export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly status: AuthErrorStatus;
  constructor(
    readonly code: AuthErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.status = REFUSALS[code];
  }

  /** The HTTP refusal that answers it; the AuthError itself is its cause. */
  toRefusal(): RefusalOf<AuthErrorCode> {
    // The one code here that is worth retrying soon: say when (auth/verify.ts, remoteKeySet).
    return refusal(this.code, this.message, this.code === 'unavailable' ? { cause: this, retryAfter: KEY_SET_RETRY_AFTER } : { cause: this });
  }
}
