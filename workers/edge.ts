import { DEV_AUTH_WARNING, TokenVerifier, authConfigFromEnv, authorizeUpgrade, isRefusal, refusalBody, refusalHeaders, type AuthConfig } from '../auth/index.js';
import type { Env } from '../durable-objects/env.js';
import { USER_HEADER } from '../durable-objects/user-shard.js';
import { ConfigError, settingNames, validateSettings } from '../core/settings.js';
import { MISCONFIGURED, connectKey } from './connect-key.js';

export { UserShard } from '../durable-objects/user-shard.js';

/**
 * The edge Worker: refuses everything it can before a WebSocket exists (auth/upgrade.ts: method, per-IP
 * connect rate, token, upgrade headers), then hands the upgrade request itself to the user's Durable Object
 * with stub.fetch — the socket then lives in the object, and this Worker is out of the message path.
 */

type EdgeState = { key: string; cfg: AuthConfig; v: TokenVerifier } | { key: string; misconfigured: string };

let state: EdgeState | null = null;
const CF_SETTINGS = settingNames('cloudflare');

/**
 * The settings checked and the verifier built once per isolate (Env is fixed for its life), keyed on every
 * setting the Cloudflare profile reads (core/settings.ts), so no setting can change the verdict unnoticed. A
 * value the schema refuses is reported once in the Worker's log (wrangler tail / the dev console) and answered
 * 503 `misconfigured` on every request, instead of surfacing per request as a 500 (IRIS_JWKS that is not JSON)
 * or as every token refused as malformed (IRIS_JWT_CLOCK_TOLERANCE that is not a number). The engine settings
 * are checked here too: the shard shares this env, and a connect the shard cannot serve is refused up front.
 */
function edgeState(env: Env): EdgeState {
  const key = CF_SETTINGS.map((n) => JSON.stringify(env[n] ?? null)).join('\u0000');
  if (state?.key !== key) {
    try {
      validateSettings(env, 'cloudflare');
      const cfg = authConfigFromEnv(env);
      // Once per isolate, not once per request.
      if (cfg.devAuth) console.warn(`iris: DEVELOPMENT MODE: ${DEV_AUTH_WARNING}`);
      state = { key, cfg, v: new TokenVerifier(cfg) };
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      console.error(`iris: MISCONFIGURED, refusing every request with 503: ${e.message}`);
      state = { key, misconfigured: e.message };
    }
  }
  return state;
}

function misconfigured(message: string): Response {
  // A settings problem is the operator's, not the client's: no retry-after, as waiting does not fix it.
  return Response.json({ error: MISCONFIGURED, message: `server misconfigured: ${message}` }, { status: 503 });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== '/healthz' && url.pathname !== '/v1/connect') return Response.json({ error: 'not_found', message: 'no such endpoint' }, { status: 404 });
    const st = edgeState(env);
    if ('misconfigured' in st) return misconfigured(st.misconfigured);
    if (url.pathname === '/healthz') {
      const { cfg } = st;
      return Response.json(cfg.devAuth ? { ok: true, devAuth: true, warning: DEV_AUTH_WARNING } : { ok: true });
    }

    const limiter = env.CONNECT_LIMITER;
    const verdict = await authorizeUpgrade(
      { method: request.method, url, header: (n) => request.headers.get(n), ip: connectKey(request, url, env) },
      {
        verifier: st.v,
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
