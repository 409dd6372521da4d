import { ProtocolError, type Refresh } from '../protocol/index.js';
import type { Conn, Sql, TokenClaims } from './ports.js';
import { Revocations } from './revocation.js';

/**
 * Token refresh on a live connection (PROTOCOL.md 3.4): a `refresh` frame carries a new token, verified exactly as
 * at the upgrade (the adapter's TokenCheck is the same auth/verify.ts verifier, same keys), then checked against
 * the user's revocations here. On success the connection's claims become the new token's, so its expiry close
 * (core/revocation.ts expiryDeadline) and any later revocation follow the new token. On failure nothing changes:
 * the connection keeps its old token until that expires.
 */

/** What the adapter's verifier says about a token: the user and claims, or why not (a refresh error code). */
export type TokenCheckResult =
  | { ok: true; user: string; claims: TokenClaims }
  | { ok: false; code: 'token_invalid' | 'unavailable'; message: string };

/** The verifier port: auth/refresh.ts builds it over the adapter's TokenVerifier. */
export type TokenCheck = (token: string) => Promise<TokenCheckResult>;

/** Runs a refresh for `user`'s connection. Returns the new exp (seconds; 0: none). Throws ProtocolError. */
export async function refreshConn(conn: Conn, f: Refresh, user: string, sql: Sql, check: TokenCheck | undefined): Promise<number> {
  if (check === undefined || conn.setToken === undefined) throw new ProtocolError('unavailable', 'this server cannot refresh tokens on a connection');
  const r = await check(f.token);
  if (!r.ok) throw new ProtocolError(r.code, r.message);
  if (r.user !== user) throw new ProtocolError('token_mismatch', 'the token names another user than this connection');
  if (new Revocations(sql, user).isRevoked(r.claims)) throw new ProtocolError('token_revoked', 'this token was revoked');
  conn.setToken(r.claims);
  return r.claims.exp ?? 0;
}
