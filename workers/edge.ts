import { DEV_AUTH_WARNING, TokenVerifier, authConfigFromEnv, authorizeUpgrade, isRefusal, refusalBody, refusalHeaders, type AuthConfig } from '../auth/index.js';
import type { Env } from '../durable-objects/env.js';
import { USER_HEADER } from '../durable-objects/user-shard.js';
import { connectKey } from './connect-key.js';

export { UserShard } from '../durable-objects/user-shard.js';

/**
 * The edge Worker: refuses everything it can before a WebSocket exists (auth/upgrade.ts: method, per-IP
 * connect rate, token, upgrade headers), then hands the upgrade request itself to the user's Durable Object
 * with stub.fetch — the socket then lives in the object, and this Worker is out of the message path.
 */

let verifier: { key: string; cfg: AuthConfig; v: TokenVerifier } | null = null;

function verifierFor(env: Env): { cfg: AuthConfig; v: TokenVerifier } {
  // Env is fixed for the life of an isolate; build the verifier (and its JWKS cache) once.
  const key = [env['IRIS_JWT_SECRET'], env['IRIS_JWKS'], env['IRIS_JWKS_URL'], env['IRIS_JWT_ISSUER'], env['IRIS_JWT_AUDIENCE'], env['IRIS_DEV_MODE']].join('\u0000');
  if (verifier?.key !== key) {
    const cfg = authConfigFromEnv(env);
    // Once per isolate, in the Worker's log (wrangler tail / the dev console), not once per request.
    if (cfg.devAuth) console.warn(`iris: DEVELOPMENT MODE: ${DEV_AUTH_WARNING}`);
    verifier = { key, cfg, v: new TokenVerifier(cfg) };
  }
  return verifier;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === '/healthz') {
      const { cfg } = verifierFor(env);
      return Response.json(cfg.devAuth ? { ok: true, devAuth: true, warning: DEV_AUTH_WARNING } : { ok: true });
    }
    if (url.pathname !== '/v1/connect') return Response.json({ error: 'not_found', message: 'no such endpoint' }, { status: 404 });

    const limiter = env.CONNECT_LIMITER;
    const verdict = await authorizeUpgrade(
      { method: request.method, url, header: (n) => request.headers.get(n), ip: connectKey(request, url, env) },
      {
        verifier: verifierFor(env).v,
        ...(limiter && { connectLimit: async (ip: string) => ((await limiter.limit({ key: ip })).success ? 0 : 60) }),
      },
    );
    if (isRefusal(verdict)) return new Response(refusalBody(verdict), { status: verdict.status, headers: refusalHeaders(verdict) });

    // The only identity the shard trusts: set here, after verification, over whatever the client sent.
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set(USER_HEADER, verdict.user);
    url.searchParams.delete('access_token');
    const stub = env.USERS.get(env.USERS.idFromName(verdict.user));
    return stub.fetch(new Request(url, { method: 'GET', headers }));
  },
} satisfies ExportedHandler<Env>;
