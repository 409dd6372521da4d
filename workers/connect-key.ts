import { readString } from '../core/settings.js';
import type { Env } from '../durable-objects/env.js';

// Not in edge.ts: every export of a Worker's main module must be a handler or a class.

/** The connect-limit key of every request whose CF-Connecting-IP is not trusted (see connectKey). */
export const UNTRUSTED_CONNECT_KEY = 'untrusted-client-address';

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])$/i;

/**
 * The key of the per-IP connect limit. Behind Cloudflare, CF-Connecting-IP is the client's address: Cloudflare
 * sets it and replaces any value the client sent. Under wrangler dev or workerd it is just a header: miniflare
 * fills it in with the TCP remote address only when the client sent none (workers-sdk #7702), so a client that
 * sends its own gets a fresh bucket per value, and the Worker has no other way to see the remote address. When
 * the header cannot be trusted, every connect shares one bucket instead (locally: all from this machine).
 *
 * IRIS_TRUST_CF_CONNECTING_IP: `1` trust it, `0` never (npm start and the test harnesses set this), `auto`
 * (default) trust it unless the request is addressed to a loopback host, which no request through Cloudflare's
 * edge can be.
 */
export function connectKey(request: Request, url: URL, env: Env): string {
  // Checked by the edge before this runs (core/settings.ts); unset reads as its default, auto.
  const mode = readString(env, 'IRIS_TRUST_CF_CONNECTING_IP');
  const trust = mode === '1' || (mode !== '0' && !LOOPBACK_HOST.test(url.hostname));
  return trust ? (request.headers.get('CF-Connecting-IP') ?? 'unknown') : UNTRUSTED_CONNECT_KEY;
}
