import { AuthError } from './errors.js';
import { refusal, type Refusal } from './refusals.js';
import { MAX_TOKEN_LENGTH, checkUpgrade, tokenFromRequest, type HeaderGetter } from './request.js';
import type { Identity, TokenVerifier } from './verify.js';

export interface UpgradeRequest {
  method: string;
  url: URL;
  header: HeaderGetter;
  /** Client address, the key of the per-IP connect limit. */
  ip: string;
}

export interface UpgradeChecks {
  verifier: TokenVerifier;
  /** Per-IP connect limit: 0 when allowed, else seconds to wait. */
  connectLimit?: (ip: string) => number | Promise<number>;
}

/**
 * Everything decided before a WebSocket exists, in one order for both profiles:
 * method -> per-IP connect rate -> token (present, at most MAX_TOKEN_LENGTH, verified) -> ?user ->
 * WebSocket upgrade + `iris.v1`.
 * The token is checked before the upgrade headers so that a client whose handshake failed can learn why
 * with a plain GET (a WebSocket API does not expose the status of a refused upgrade).
 */
export async function authorizeUpgrade(req: UpgradeRequest, checks: UpgradeChecks): Promise<Identity | Refusal> {
  if (req.method !== 'GET') return refusal('method_not_allowed', 'use GET');
  if (checks.connectLimit) {
    const wait = await checks.connectLimit(req.ip);
    if (wait > 0) return refusal('too_many_connects', 'too many connection attempts from this address', { retryAfter: wait });
  }
  const token = tokenFromRequest(req.header, req.url);
  if (!token) return refusal('missing_token', 'send a bearer token');
  // Before any verification work: nothing about an oversized token is looked at.
  if (token.length > MAX_TOKEN_LENGTH) return refusal('token_too_large', `token longer than ${MAX_TOKEN_LENGTH} characters`);
  let id: Identity;
  try {
    id = await checks.verifier.verify(token);
  } catch (e) {
    if (e instanceof AuthError) return e.toRefusal();
    throw e;
  }
  const asked = req.url.searchParams.get('user');
  if (asked !== null && asked !== id.user) return refusal('user_mismatch', 'token subject does not match ?user');
  const bad = checkUpgrade(req.method, req.header);
  if (bad) return bad;
  // The claims the user's shard checks against its revocations (core/revocation.ts) and remembers per connection.
  return id;
}

/**
 * The identity of a request answered 426 (a plain GET whose token verified): a client probing why its handshake
 * failed must hear `token_revoked` when that was why, so the adapter asks the user's shard (core/revocation.ts)
 * with these claims. Only for that rare answer: an upgrade is checked by the shard it reaches anyway.
 */
export async function identityOf(req: UpgradeRequest, verifier: TokenVerifier): Promise<Identity | null> {
  const token = tokenFromRequest(req.header, req.url);
  if (!token || token.length > MAX_TOKEN_LENGTH) return null;
  try {
    return await verifier.verify(token);
  } catch {
    return null;
  }
}

export function isRefusal(r: Identity | Refusal): r is Refusal {
  return 'status' in r;
}

/**
 * The HTTP headers of a refusal (JSON body; 401s name the problem in WWW-Authenticate). A browser SDK learns
 * why its handshake failed by GETting the same URL with ?access_token= (a simple request: no preflight); CORS
 * lets a page of any origin read the status, the body and Retry-After of that answer. Nothing secret is in
 * them: they only describe the token the caller itself sent.
 */
export function refusalHeaders(r: Refusal): Record<string, string> {
  const h: Record<string, string> = {
    'content-type': 'application/json',
    'access-control-allow-origin': '*',
    'access-control-expose-headers': 'retry-after, www-authenticate',
    ...r.headers,
  };
  if (r.status === 401) h['www-authenticate'] = `Bearer error="invalid_token", error_description="${r.code}"`;
  return h;
}

export function refusalBody(r: Refusal): string {
  return JSON.stringify({ error: r.code, message: r.message });
}
