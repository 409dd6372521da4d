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
  | 'claim_invalid'
  | 'invalid_subject'
  | 'user_mismatch'
  | 'auth_not_configured';

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
    return refusal(this.code, this.message, { cause: this });
  }
}
