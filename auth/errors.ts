/**
 * Why a connection was refused before the WebSocket existed. Each maps to one HTTP status; the body names
 * the code so a client can tell "get a new token" (401) from "this token may not do that" (403).
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

export type AuthErrorStatus = 401 | 403 | 431 | 503;

const STATUS: Record<AuthErrorCode, AuthErrorStatus> = {
  missing_token: 401,
  // 431, not 401: a new token from the same issuer would be just as large, and 401 means "get a new token".
  // It is also what Node itself answers on-prem when the headers pass its own 16 KiB limit.
  token_too_large: 431,
  malformed_token: 401,
  invalid_signature: 401,
  unsupported_algorithm: 401,
  token_expired: 401,
  token_not_yet_valid: 401,
  claim_invalid: 403,
  invalid_subject: 403,
  user_mismatch: 403,
  auth_not_configured: 503,
};

export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly status: AuthErrorStatus;
  constructor(
    readonly code: AuthErrorCode,
    message: string,
  ) {
    super(message);
    this.status = STATUS[code];
  }
}
