/**
 * The one vocabulary of HTTP refusals: every reason a request to the connect endpoint is answered with a status
 * instead of a WebSocket, on both profiles (edge Worker, on-prem listener and supervisor). docs/PROTOCOL.md
 * section 3.3 lists exactly these codes with exactly these statuses; test/unit/protocol-doc-server.test.ts fails
 * when the two differ in either direction.
 *
 * Modelled on jose's JOSEErrorCode: a closed union of stable codes, and a union of records tagged by `code`, so
 * a refusal written with a status that does not belong to its code does not compile, and a switch on `code`
 * narrows the status.
 */
export const REFUSALS = {
  // ---- decided by auth/upgrade.ts, in this order (section 3.3, first table)
  not_found: 404,
  method_not_allowed: 405,
  too_many_connects: 429,
  missing_token: 401,
  // 431, not 401: a new token from the same issuer would be just as large, and 401 means "get a new token".
  // It is also what Node itself answers on-prem when the headers pass its own 16 KiB limit.
  token_too_large: 431,
  auth_not_configured: 503,
  malformed_token: 401,
  unsupported_algorithm: 401,
  invalid_signature: 401,
  token_expired: 401,
  token_not_yet_valid: 401,
  /** Revoked by jti, or issued (iat) before the user's "log out everywhere" time; checked by the user's shard. */
  token_revoked: 401,
  claim_invalid: 403,
  invalid_subject: 403,
  user_mismatch: 403,
  upgrade_required: 426,
  unsupported_protocol: 400,
  // ---- the server's own state, or an HTTP request too broken to check (section 3.3, second table)
  going_away: 503,
  unavailable: 503,
  server_full: 503,
  /** The deployment's settings are invalid (say, IRIS_JWKS that is not JSON): nothing a client can fix. */
  misconfigured: 503,
  internal: 500,
  bad_request: 400,
  request_timeout: 408,
  headers_too_large: 431,
} as const satisfies Record<string, number>;

export type RefusalCode = keyof typeof REFUSALS;
export type RefusalStatus = (typeof REFUSALS)[RefusalCode];

/**
 * An HTTP refusal sent instead of a WebSocket: the status, and a JSON body {error: code, message}.
 * Tagged by `code` (one member per code), so `{ status: 503, code: 'not_found' }` is a type error.
 */
export type Refusal = {
  [C in RefusalCode]: {
    status: (typeof REFUSALS)[C];
    code: C;
    /** Human-readable; sent to the client, so it must not name anything secret. */
    message: string;
    headers?: Record<string, string>;
    /** What caused it (an AuthError, a Node client error, ...), for logs. Never sent to the client. */
    cause?: unknown;
  };
}[RefusalCode];

export type RefusalOf<C extends RefusalCode> = Extract<Refusal, { code: C }>;

export interface RefusalOptions {
  /** Seconds; becomes the Retry-After header. */
  retryAfter?: number;
  cause?: unknown;
}

/** A refusal with the status its code has in REFUSALS: the way adapters build one. */
export function refusal<C extends RefusalCode>(code: C, message: string, opts: RefusalOptions = {}): RefusalOf<C> {
  // The cast is sound: status is read from the same table the type is built from.
  const r = { status: REFUSALS[code], code, message } as RefusalOf<C>;
  if (opts.retryAfter !== undefined) r.headers = { 'retry-after': String(opts.retryAfter) };
  if (opts.cause !== undefined) r.cause = opts.cause;
  return r;
}

export function isRefusalCode(s: string): s is RefusalCode {
  return Object.hasOwn(REFUSALS, s);
}
