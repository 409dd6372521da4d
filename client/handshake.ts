/**
 * Opening a socket and, when the handshake fails, learning why: the WebSocket API says nothing about a refused
 * upgrade, so the client asks again with a plain GET (see probeRefusal).
 */
import { SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX } from '../protocol/index.js';
import { IrisError } from './errors.js';
import type { FetchLike, ProbeResult, WebSocketConstructor, WebSocketLike } from './socket.js';
import type { IrisClientOptions, TokenTransport } from './types.js';

/** Errors answering a hello that no retry will fix. */
export const FATAL_HELLO_ERRORS = new Set(['too_many_devices', 'invalid_field', 'bad_state', 'hello_required']);

export type HandshakeOptions = Pick<IrisClientOptions, 'url' | 'tokenTransport' | 'probeRefusals' | 'fetch' | 'connectTimeoutMs'>;

/** A WebSocket to `url` carrying `token` the way `tokenTransport` says. */
export function createSocket(WS: WebSocketConstructor, url: string, transport: TokenTransport, token: string): WebSocketLike {
  const protocols = [SUBPROTOCOL];
  switch (transport) {
    case 'subprotocol':
      return new WS(url, [...protocols, TOKEN_SUBPROTOCOL_PREFIX + token]);
    case 'query': {
      const u = new URL(url);
      u.searchParams.set('access_token', token);
      return new WS(u.toString(), protocols);
    }
    case 'header':
      return new WS(url, { protocols, headers: { authorization: `Bearer ${token}` } });
  }
}

/**
 * GETs the connect URL with the token: the server's refusal (status, JSON {error, message}, Retry-After), or
 * null when that cannot be learnt (no fetch, network failure). Browsers: the token goes as ?access_token=
 * (a simple GET needs no CORS preflight; refusals carry access-control-allow-origin: *), unless the client
 * uses tokenTransport 'header'.
 */
export async function probeRefusal(opts: HandshakeOptions, token: string): Promise<ProbeResult | null> {
  const f = opts.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (opts.probeRefusals === false || typeof f !== 'function') return null;
  try {
    const u = new URL(opts.url);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    const headers: Record<string, string> = {};
    if ((opts.tokenTransport ?? 'subprotocol') === 'header') headers['authorization'] = `Bearer ${token}`;
    else u.searchParams.set('access_token', token);
    const timeout = typeof AbortSignal.timeout === 'function' ? { signal: AbortSignal.timeout(opts.connectTimeoutMs ?? 15_000) } : {};
    const res = await f(u.toString(), { method: 'GET', headers, ...timeout });
    let body: unknown = null;
    try {
      body = await res.json();
    } catch {
      // not JSON: the status alone
    }
    const b = (typeof body === 'object' && body !== null ? body : {}) as { error?: unknown; message?: unknown };
    const retryAfter = parseRetryAfter(res.headers.get('retry-after'));
    return {
      status: res.status,
      ...(typeof b.error === 'string' ? { code: b.error } : {}),
      ...(typeof b.message === 'string' ? { message: b.message } : {}),
      ...(retryAfter !== undefined ? { retryAfter } : {}),
    };
  } catch {
    return null;
  }
}

/** The terminal error of a refused token: code auth_failed, the server's reason (token_expired, ...). */
export function authError(r: ProbeResult, why: string): IrisError {
  const reason = r.code ?? (r.status === 401 ? 'unauthorized' : r.status === 403 ? 'forbidden' : 'unknown');
  return new IrisError('auth_failed', `server refused the connection (HTTP ${r.status || 401} ${reason}${r.message ? `: ${r.message}` : ''}); ${why}`, {
    status: r.status || 401,
    reason,
  });
}

/** Retry-After in ms: delta-seconds or an HTTP date. */
function parseRetryAfter(v: string | null): number | undefined {
  if (v === null || v.trim() === '') return undefined;
  const n = Number(v);
  if (Number.isFinite(n) && n >= 0) return Math.round(n * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}
