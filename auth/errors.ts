/**
 * Why a connection was refused before the WebSocket existed. Each maps to one HTTP status; the body names
 * the code so a client can tell "get a new token" (401) from "this token may not do that" (403).
 */
export type AuthErrorCode =
  | 'missing_token'
  | 'malformed_token'
  | 'invalid_signature'
  | 'unsupported_algorithm'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'claim_invalid'
  | 'invalid_subject'
  | 'user_mismatch'
  | 'auth_not_configured';

const STATUS: Record<AuthErrorCode, 401 | 403 | 503> = {
  missing_token: 401,
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
  readonly status: 401 | 403 | 503;
  constructor(
    readonly code: AuthErrorCode,
    message: string,
  ) {
    super(message);
    this.status = STATUS[code];
  }
}
