import { AuthError, TokenVerifier, authConfigFromEnv, checkUpgrade, tokenFromRequest } from '../auth/index.js';
import type { Env } from '../durable-objects/env.js';
import { USER_HEADER } from '../durable-objects/user-shard.js';

export { UserShard } from '../durable-objects/user-shard.js';

/**
 * The edge Worker: refuses everything it can before a WebSocket exists (method, upgrade, subprotocol,
 * per-IP connect rate, token), then hands the upgrade request itself to the user's Durable Object with
 * stub.fetch — the socket then lives in the object, and this Worker is out of the message path.
 */

let verifier: { key: string; v: TokenVerifier } | null = null;

function verifierFor(env: Env): TokenVerifier {
  // Env is fixed for the life of an isolate; build the verifier (and its JWKS cache) once.
  const key = [env['IRIS_JWT_SECRET'], env['IRIS_JWKS'], env['IRIS_JWKS_URL'], env['IRIS_JWT_ISSUER'], env['IRIS_JWT_AUDIENCE'], env['IRIS_DEV_MODE']].join('\u0000');
  if (verifier?.key !== key) verifier = { key, v: new TokenVerifier(authConfigFromEnv(env)) };
  return verifier.v;
}

function refuse(status: number, code: string, message: string, extra: Record<string, string> = {}): Response {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...extra };
  if (status === 401) headers['www-authenticate'] = `Bearer error="invalid_token", error_description="${code}"`;
  return new Response(JSON.stringify({ error: code, message }), { status, headers });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/healthz') return Response.json({ ok: true });
    if (url.pathname !== '/v1/connect') return refuse(404, 'not_found', 'no such endpoint');

    const header = (n: string) => request.headers.get(n);
    const bad = checkUpgrade(request.method, header);
    if (bad) return refuse(bad.status, bad.code, bad.message);

    if (env.CONNECT_LIMITER) {
      const ip = request.headers.get('CF-Connecting-IP') ?? 'unknown';
      const { success } = await env.CONNECT_LIMITER.limit({ key: ip });
      if (!success) return refuse(429, 'too_many_connects', 'too many connection attempts from this address', { 'retry-after': '60' });
    }

    const token = tokenFromRequest(header, url);
    if (!token) return refuse(401, 'missing_token', 'send a bearer token');
    let user: string;
    try {
      ({ user } = await verifierFor(env).verify(token));
    } catch (e) {
      if (e instanceof AuthError) return refuse(e.status, e.code, e.message);
      throw e;
    }
    const asked = url.searchParams.get('user');
    if (asked !== null && asked !== user) return refuse(403, 'user_mismatch', 'token subject does not match ?user');

    // The only identity the shard trusts: set here, after verification, over whatever the client sent.
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set(USER_HEADER, user);
    url.searchParams.delete('access_token');
    const stub = env.USERS.get(env.USERS.idFromName(user));
    return stub.fetch(new Request(url, { method: 'GET', headers }));
  },
} satisfies ExportedHandler<Env>;
