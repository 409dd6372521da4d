import {
  DEV_AUTH_WARNING,
  TokenVerifier,
  authConfigFromEnv,
  authorizeUpgrade,
  isRefusal,
  refusal,
  refusalBody,
  refusalHeaders,
  type AuthConfig,
  type Refusal,
} from '../auth/index.js';
import type { Env } from '../durable-objects/env.js';
import { USER_HEADER } from '../durable-objects/user-shard.js';
import { connectKey } from './connect-key.js';

export { UserShard } from '../durable-objects/user-shard.js';

/**
 * The edge Worker: refuses everything it can before a WebSocket exists (auth/upgrade.ts: method, per-IP
 * connect rate, token, upgrade headers), then hands the upgrade request itself to the user's Durable Object
 * with stub.fetch — the socket then lives in the object, and this Worker is out of the message path.
 */

type Verifier = { cfg: AuthConfig; v: TokenVerifier } | { misconfigured: Refusal };
let verifier: { key: string; value: Verifier } | null = null;

function verifierFor(env: Env): Verifier {
  // Env is fixed for the life of an isolate; build the verifier (and its JWKS cache) once.
  const key = [env['IRIS_JWT_SECRET'], env['IRIS_JWKS'], env['IRIS_JWKS_URL'], env['IRIS_JWT_ISSUER'], env['IRIS_JWT_AUDIENCE'], env['IRIS_DEV_MODE']].join('\u0000');
  if (verifier?.key !== key) {
    let value: Verifier;
    try {
      const cfg = authConfigFromEnv(env);
      // Once per isolate, in the Worker's log (wrangler tail / the dev console), not once per request.
      if (cfg.devAuth) console.warn(`iris: DEVELOPMENT MODE: ${DEV_AUTH_WARNING}`);
      value = { cfg, v: new TokenVerifier(cfg) };
    } catch (e) {
      // A Worker has no start-up to refuse (on-prem exits instead): answer every request with a 503 that says
      // the deployment is at fault, rather than an uncaught exception's bare 500. The message names the setting
      // only; the error itself goes to the log.
      console.error('iris: invalid auth settings:', e);
      value = { misconfigured: refusal('misconfigured', 'the server is misconfigured (auth settings); see its log', { cause: e }) };
    }
    verifier = { key, value };
  }
  return verifier.value;
}

function refuse(r: Refusal): Response {
  return new Response(refusalBody(r), { status: r.status, headers: refusalHeaders(r) });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const auth = verifierFor(env);
    if (url.pathname === '/healthz') {
      if ('misconfigured' in auth) return refuse(auth.misconfigured);
      return Response.json(auth.cfg.devAuth ? { ok: true, devAuth: true, warning: DEV_AUTH_WARNING } : { ok: true });
    }
    if (url.pathname !== '/v1/connect') return refuse(refusal('not_found', 'no such endpoint'));
    if ('misconfigured' in auth) return refuse(auth.misconfigured);

    const limiter = env.CONNECT_LIMITER;
    const verdict = await authorizeUpgrade(
      { method: request.method, url, header: (n) => request.headers.get(n), ip: connectKey(request, url, env) },
      {
        verifier: auth.v,
        ...(limiter && { connectLimit: async (ip: string) => ((await limiter.limit({ key: ip })).success ? 0 : 60) }),
      },
    );
    if (isRefusal(verdict)) return refuse(verdict);

    // The only identity the shard trusts: set here, after verification, over whatever the client sent.
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set(USER_HEADER, verdict.user);
    url.searchParams.delete('access_token');
    const stub = env.USERS.get(env.USERS.idFromName(verdict.user));
    return stub.fetch(new Request(url, { method: 'GET', headers }));
  },
} satisfies ExportedHandler<Env>;
