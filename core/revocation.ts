import { CLOSE_CODES } from '../protocol/index.js';
import type { Conn, Sql, TokenClaims } from './ports.js';

/**
 * Token revocation (PROTOCOL.md 3.4), kept in the user's shard: the shard is where every upgrade of the user
 * lands (Cloudflare: the Durable Object the edge forwards to; on-prem: the owning worker), so checking costs no
 * extra hop, and where the user's live connections are, so a revocation closes them at once.
 *
 *   one token:   revocations (user, jti, exp)   refused while it could still verify; deleted once past exp
 *   everything:  revoked_before (user, t)       tokens with iat < t are refused (log out everywhere)
 *
 * A token without `jti` can be revoked only by time. A token without `iat` cannot be placed in time, so once a
 * user has a "log out everywhere" time every such token of the user is refused: an issuer that wants to use it
 * must set `iat` (scripts/token.ts does).
 */

/**
 * Header by which an adapter hands the verified claims from where the token was checked to the user's shard
 * (edge Worker -> Durable Object; accepting worker -> owning worker). Always overwritten after verification, so
 * a value a client sent is never read.
 */
export const TOKEN_HEADER = 'x-iris-token';

/** Only the three claims revocation and expiry look at, from a verified identity (which also names the user). */
export function claimsOf(c: TokenClaims): TokenClaims {
  const o: TokenClaims = {};
  if (c.jti !== undefined) o.jti = c.jti;
  if (c.iat !== undefined) o.iat = c.iat;
  if (c.exp !== undefined) o.exp = c.exp;
  return o;
}

/** The claims as TOKEN_HEADER carries them. */
export function claimsHeader(c: TokenClaims): string {
  return JSON.stringify(claimsOf(c));
}

/** Reads TOKEN_HEADER; anything unexpected in it is left out (it came from our own edge or worker). */
export function parseClaims(raw: string | null | undefined): TokenClaims {
  if (!raw) return {};
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    return {};
  }
  if (typeof v !== 'object' || v === null) return {};
  const o = v as Record<string, unknown>;
  const c: TokenClaims = {};
  if (typeof o['jti'] === 'string') c.jti = o['jti'];
  if (typeof o['iat'] === 'number') c.iat = o['iat'];
  if (typeof o['exp'] === 'number') c.exp = o['exp'];
  return c;
}

/** One user's revocations (all queries of the two tables). Synchronous SQL: writes go inside Storage.commit. */
export class Revocations {
  constructor(
    private readonly sql: Sql,
    private readonly user: string,
  ) {}

  /** Revokes one token until its exp (seconds). Prunes the user's revocations already past theirs. */
  revokeToken(jti: string, exp: number, nowSec: number): void {
    this.prune(nowSec);
    this.sql.all(
      `INSERT INTO revocations (user, jti, exp) VALUES (?, ?, ?) ON CONFLICT (user, jti) DO UPDATE SET exp = max(exp, excluded.exp)`,
      this.user,
      jti,
      Math.ceil(exp),
    );
  }

  /** Tokens issued before t (seconds) are refused from now on. Never moves back: a later, smaller t changes nothing. */
  revokeBefore(t: number): void {
    this.sql.all(
      `INSERT INTO revoked_before (user, t) VALUES (?, ?) ON CONFLICT (user) DO UPDATE SET t = max(t, excluded.t)`,
      this.user,
      Math.floor(t),
    );
  }

  /** The "log out everywhere" time, seconds (0: none). */
  before(): number {
    return this.sql.all<{ t: number }>(`SELECT t FROM revoked_before WHERE user = ?`, this.user)[0]?.t ?? 0;
  }

  /** Deletes revocations of tokens that have expired anyway (lazily: at the next revocation of the user). */
  prune(nowSec: number): void {
    this.sql.all(`DELETE FROM revocations WHERE user = ? AND exp < ?`, this.user, Math.floor(nowSec));
  }

  /** Whether a token with these claims is revoked. One or two primary-key reads. */
  isRevoked(c: TokenClaims): boolean {
    const before = this.before();
    if (before > 0 && (c.iat === undefined || c.iat < before)) return true;
    if (c.jti === undefined) return false;
    return this.sql.all(`SELECT 1 FROM revocations WHERE user = ? AND jti = ?`, this.user, c.jti).length > 0;
  }

  /** Every revocation of the user (admin export). */
  list(): { jti: string; exp: number }[] {
    return this.sql.all<{ jti: string; exp: number }>(`SELECT jti, exp FROM revocations WHERE user = ? ORDER BY jti`, this.user);
  }
}

/**
 * Closes the user's live connections whose token is now revoked, with 4005 token_revoked. Returns how many.
 * A connection without claims (accepted before revocations existed) is not touched.
 */
export function closeRevoked(conns: Iterable<Conn>, rev: Revocations): number {
  let n = 0;
  for (const c of [...conns]) {
    if (c.token === undefined || !rev.isRevoked(c.token)) continue;
    c.close(CLOSE_CODES.token_revoked, 'token revoked');
    n++;
  }
  return n;
}

/**
 * When a connection with these claims must be closed for expiry (ms), or undefined (no exp: never). The grace
 * gives a client that refreshes late, or whose clock is behind, time to do it (IRIS_TOKEN_EXPIRY_GRACE_S).
 */
export function expiryDeadline(c: TokenClaims | undefined, graceMs: number): number | undefined {
  return c?.exp === undefined ? undefined : c.exp * 1000 + graceMs;
}
