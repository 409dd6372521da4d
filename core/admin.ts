import { CLOSE_CODES, ID_PATTERN } from '../protocol/index.js';
import type { Conn, Storage } from './ports.js';
import { Revocations, closeRevoked } from './revocation.js';
import { eraseUser, exportUser } from './user-data.js';

/**
 * The admin API (docs/OPERATIONS.md "Admin API"), the part both profiles share: what a request asks
 * (parseAdminRequest), who may ask (checkAdmin), and what it does in the user's shard (runAdmin). The adapters
 * only route: the edge Worker to the user's Durable Object (an RPC), the on-prem listener to the owning worker
 * (a link call).
 *
 *   POST /admin/v1/users/<user>/revoke?jti=<jti>&exp=<seconds>   one token, until its exp
 *   POST /admin/v1/users/<user>/revoke[?before=<seconds>]         every token issued before (default: now)
 *   POST /admin/v1/users/<user>/disconnect[?device=<device>]      close 4007 (every device, or one)
 *   GET  /admin/v1/users/<user>/stats                             what the shard holds for the user
 *   GET  /admin/v1/users/<user>/export                            every stored row of the user (JSON)
 *   POST /admin/v1/users/<user>/erase                             delete them (the right to be forgotten)
 *   GET  /admin/v1/stats                                          the deployment (on-prem: process-wide)
 */

/** Every answer of the admin API that is not a success: its JSON `error`, with one status each. */
export const ADMIN_ERRORS = {
  /** No IRIS_ADMIN_SECRET configured: the API is off (the default). */
  admin_disabled: 403,
  /** Missing or wrong credential. Said before anything about the request is looked at. */
  unauthorized: 401,
  not_found: 404,
  method_not_allowed: 405,
  bad_request: 400,
  unavailable: 503,
  internal: 500,
} as const satisfies Record<string, number>;

export type AdminErrorCode = keyof typeof ADMIN_ERRORS;

export interface AdminAnswer {
  status: number;
  body: Record<string, unknown>;
}

export function adminError(code: AdminErrorCode, message: string): AdminAnswer {
  return { status: ADMIN_ERRORS[code], body: { error: code, message } };
}

export type AdminCall =
  | { op: 'revoke'; user: string; jti: string; exp: number }
  | { op: 'revoke_before'; user: string; before: number }
  | { op: 'disconnect'; user: string; device?: string }
  | { op: 'user_stats'; user: string }
  | { op: 'export'; user: string }
  | { op: 'erase'; user: string };

export type AdminRequest = AdminCall | { op: 'stats' };

export const ADMIN_PREFIX = '/admin/v1/';

/** Seconds; a query number that is a finite non-negative integer, else undefined. */
function seconds(v: string | null): number | undefined {
  if (v === null || !/^[0-9]{1,12}$/.test(v)) return undefined;
  return Number(v);
}

/** What an /admin/v1/ request asks, or the error that answers it. `nowSec` is the default of `before`. */
export function parseAdminRequest(method: string, url: URL, nowSec: number): AdminRequest | AdminAnswer {
  const parts = url.pathname.slice(ADMIN_PREFIX.length).split('/');
  if (parts.length === 1 && parts[0] === 'stats') {
    return method === 'GET' ? { op: 'stats' } : adminError('method_not_allowed', 'use GET');
  }
  if (parts.length !== 3 || parts[0] !== 'users') return adminError('not_found', 'no such admin endpoint');
  let user: string;
  try {
    user = decodeURIComponent(parts[1]!);
  } catch {
    return adminError('bad_request', 'user id is not valid percent-encoding');
  }
  if (!ID_PATTERN.test(user)) return adminError('bad_request', 'not a valid user id');
  const q = url.searchParams;
  const action = parts[2];
  const want = action === 'stats' || action === 'export' ? 'GET' : 'POST';
  if (action !== 'revoke' && action !== 'disconnect' && action !== 'stats' && action !== 'export' && action !== 'erase') return adminError('not_found', 'no such admin endpoint');
  if (method !== want) return adminError('method_not_allowed', `use ${want}`);
  if (action === 'stats') return { op: 'user_stats', user };
  if (action === 'export' || action === 'erase') return { op: action, user };
  if (action === 'disconnect') {
    const device = q.get('device');
    if (device === null) return { op: 'disconnect', user };
    if (!ID_PATTERN.test(device)) return adminError('bad_request', 'not a valid device id');
    return { op: 'disconnect', user, device };
  }
  const jti = q.get('jti');
  if (jti !== null) {
    const exp = seconds(q.get('exp'));
    if (jti === '' || jti.length > 128) return adminError('bad_request', 'jti must be 1-128 characters');
    if (exp === undefined) return adminError('bad_request', 'revoking one token needs exp (seconds since epoch, the token\'s exp)');
    return { op: 'revoke', user, jti, exp };
  }
  const before = q.has('before') ? seconds(q.get('before')) : nowSec;
  if (before === undefined) return adminError('bad_request', 'before must be seconds since epoch');
  return { op: 'revoke_before', user, before };
}

export function isAdminAnswer(r: AdminRequest | AdminAnswer): r is AdminAnswer {
  return 'status' in r;
}

const utf8 = new TextEncoder();

/**
 * Checks the admin credential: `Authorization: Bearer <IRIS_ADMIN_SECRET>`. Compared as SHA-256 digests in
 * constant time, so neither the length nor a prefix of the secret leaks through timing. Null when allowed.
 */
export async function checkAdmin(secret: string | undefined, authorization: string | null | undefined): Promise<AdminAnswer | null> {
  if (secret === undefined || secret === '') return adminError('admin_disabled', 'the admin API is off: set IRIS_ADMIN_SECRET');
  const m = /^Bearer\s+(\S+)$/i.exec((authorization ?? '').trim());
  if (!m) return adminError('unauthorized', 'send Authorization: Bearer <admin secret>');
  const [a, b] = await Promise.all([crypto.subtle.digest('SHA-256', utf8.encode(m[1]!)), crypto.subtle.digest('SHA-256', utf8.encode(secret))]);
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0 ? null : adminError('unauthorized', 'wrong admin credential');
}

/** What runAdmin needs of the user's shard: its storage and its open connections. */
export interface AdminShard {
  storage: Storage;
  conns(): Iterable<Conn>;
  now(): number;
  /**
   * Erase, before the rows go: closes every connection of the user (4007) and resolves once the core is done with
   * them (their Mailbox.onClose ran: it writes last seen and the device row, which must not come back after).
   */
  disconnectAll(): Promise<void>;
  /** Erase, after the commit: the user's in-memory state (caches of the deleted rows) is dropped. */
  forget(): void;
}

/** Counts of what the shard holds for the user (the per-user part of admin stats). */
function userStats(shard: AdminShard, user: string): Record<string, unknown> {
  const { sql } = shard.storage;
  const count = (table: string) => sql.all<{ n: number }>(`SELECT count(*) AS n FROM ${table} WHERE user = ?`, user)[0]?.n ?? 0;
  const conns = [...shard.conns()];
  return {
    user,
    inbox: count('inbox'),
    outbox: count('outbox'),
    devices: count('devices'),
    connections: conns.length,
    online: conns.filter((c) => c.state !== null).length,
    revocations: count('revocations'),
    revokedBefore: new Revocations(sql, user).before(),
  };
}

/**
 * Runs one admin call in the user's shard (the adapter made sure this is the right one, and that the schema
 * exists). Revocations are committed before any connection is closed and before the answer: a 200 means stored.
 */
export async function runAdmin(call: AdminCall, shard: AdminShard): Promise<AdminAnswer> {
  const { storage } = shard;
  const rev = new Revocations(storage.sql, call.user);
  switch (call.op) {
    case 'revoke': {
      const nowSec = Math.floor(shard.now() / 1000);
      await storage.commit(() => rev.revokeToken(call.jti, call.exp, nowSec));
      return { status: 200, body: { ok: true, user: call.user, jti: call.jti, exp: call.exp, closed: closeRevoked(shard.conns(), rev) } };
    }
    case 'revoke_before': {
      await storage.commit(() => rev.revokeBefore(call.before));
      return { status: 200, body: { ok: true, user: call.user, before: rev.before(), closed: closeRevoked(shard.conns(), rev) } };
    }
    case 'disconnect': {
      let closed = 0;
      for (const c of [...shard.conns()]) {
        if (call.device !== undefined && c.state?.device !== call.device) continue;
        c.close(CLOSE_CODES.disconnected_by_admin, 'disconnected by an operator');
        closed++;
      }
      return { status: 200, body: { ok: true, user: call.user, closed } };
    }
    case 'user_stats':
      return { status: 200, body: userStats(shard, call.user) };
    case 'export':
      return { status: 200, body: { user: call.user, exportedAt: shard.now(), data: exportUser(storage.sql, call.user) } };
    case 'erase': {
      await shard.disconnectAll();
      const nowSec = Math.floor(shard.now() / 1000);
      const deleted = await storage.commit(() => {
        const d = eraseUser(storage.sql, call.user);
        // The tokens the user holds would recreate an empty account at their next connect: they are refused from
        // now on (one row, the user id and this time, is what the shard keeps; a token issued later works).
        rev.revokeBefore(nowSec);
        return d;
      });
      shard.forget();
      return { status: 200, body: { ok: true, user: call.user, deleted, revokedBefore: nowSec } };
    }
  }
}
