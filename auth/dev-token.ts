/**
 * The web chat's development token endpoint (`GET /dev/token?user=alice`), shared by both profiles.
 *
 * It mints a token signed with the PUBLIC development secret, so it exists only where that secret is already
 * accepted (development mode without any configured key: `AuthConfig.devAuth`) AND the request is addressed to
 * a loopback host: it adds no power an attacker lacks (anyone can sign with the public secret), but a server
 * reachable from a network must not hand tokens out to a browser that merely opens a page. Everywhere else the
 * endpoint does not exist (404), and the page asks for a token the app supplies.
 */
import { SignJWT } from 'jose';
import { ID_PATTERN } from '../protocol/limits.js';
import { DEV_SECRET } from './config.js';

export const DEV_TOKEN_PATH = '/dev/token';

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\]|::1)$/i;

/** Whether a host name (URL hostname, or a socket address) is loopback. */
export function isLoopback(host: string): boolean {
  return LOOPBACK_HOST.test(host) || host === '::ffff:127.0.0.1';
}

export interface DevTokenAnswer {
  status: number;
  body: { token: string; user: string; expiresIn: number } | { error: string; message: string };
}

/**
 * The endpoint's answer. `devAuth`: the server accepts the development secret; `loopback`: the request was
 * addressed to (edge) or came from (on-prem) a loopback host.
 */
export async function devToken(search: URLSearchParams, devAuth: boolean, loopback: boolean): Promise<DevTokenAnswer> {
  if (!devAuth || !loopback) return { status: 404, body: { error: 'not_found', message: 'no such endpoint' } };
  const user = search.get('user') ?? '';
  if (!ID_PATTERN.test(user)) return { status: 400, body: { error: 'invalid_field', message: 'user: 1-64 chars of [A-Za-z0-9._@+=-]' } };
  const ttl = 24 * 3600;
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt(now)
    .setJti(crypto.randomUUID())
    .setExpirationTime(now + ttl)
    .sign(new TextEncoder().encode(DEV_SECRET));
  return { status: 200, body: { token, user, expiresIn: ttl } };
}
