import { SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX } from '../protocol/limits.js';
import { refusal, type RefusalOf } from './refusals.js';

/**
 * Longest token accepted, in characters, wherever it is carried. Real JWTs are well under 2 KiB; the bound
 * keeps a 100 KB "token" from reaching the verifier (base64 decoding, JSON parsing, a signature over it) and
 * gives both profiles one limit: on-prem Node refuses past 16 KiB of headers anyway, workerd did not.
 */
export const MAX_TOKEN_LENGTH = 8192;

/** Header-like lookup, so Fetch Headers and Node's IncomingHttpHeaders both fit. */
export type HeaderGetter = (name: string) => string | null | undefined;

/**
 * Where a client may put its token, in order of preference:
 *   Authorization: Bearer <jwt>                 (servers, Node, anything that can set headers)
 *   Sec-WebSocket-Protocol: iris.v1, bearer.<jwt> (browsers: the only header they control on a WebSocket)
 *   ?access_token=<jwt>                          (last resort: it may end up in access logs)
 */
export function tokenFromRequest(header: HeaderGetter, url: URL): string | null {
  const auth = header('authorization');
  if (auth) {
    const m = /^Bearer\s+(\S+)$/i.exec(auth.trim());
    return m ? m[1]! : '';
  }
  for (const p of subprotocols(header)) {
    if (p.startsWith(TOKEN_SUBPROTOCOL_PREFIX)) return p.slice(TOKEN_SUBPROTOCOL_PREFIX.length);
  }
  return url.searchParams.get('access_token');
}

export function subprotocols(header: HeaderGetter): string[] {
  const raw = header('sec-websocket-protocol');
  return raw ? raw.split(',').map((s) => s.trim()).filter(Boolean) : [];
}

/** Pre-upgrade checks that do not involve the token. Returns an HTTP status and reason, or null if fine. */
export function checkUpgrade(method: string, header: HeaderGetter): RefusalOf<'method_not_allowed' | 'upgrade_required' | 'unsupported_protocol'> | null {
  if (method !== 'GET') return refusal('method_not_allowed', 'use GET');
  if ((header('upgrade') ?? '').toLowerCase() !== 'websocket') return refusal('upgrade_required', 'this endpoint speaks WebSocket only');
  if (!subprotocols(header).includes(SUBPROTOCOL)) return refusal('unsupported_protocol', `offer the "${SUBPROTOCOL}" subprotocol`);
  return null;
}
