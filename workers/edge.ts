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
import { ConfigError, settingNames, validateSettings } from '../core/settings.js';
import { connectKey } from './connect-key.js';

export { UserShard } from '../durable-objects/user-shard.js';
export { GroupShard } from '../durable-objects/group-shard.js';

/**
 * The edge Worker: refuses everything it can before a WebSocket exists (auth/upgrade.ts: method, per-IP
 * connect rate, token, upgrade headers), then hands the upgrade request itself to the user's Durable Object
 * with stub.fetch — the socket then lives in the object, and this Worker is out of the message path.
 */

type EdgeState = { key: string; cfg: AuthConfig; v: TokenVerifier } | { key: string; misconfigured: Refusal };

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
      // A Worker has no start-up to refuse (on-prem exits instead): every request gets a 503 that says the
      // deployment is at fault. A settings error names the setting; anything else only points at the log.
      const message = e instanceof ConfigError ? `server misconfigured: ${e.message}` : 'server misconfigured (auth settings); see its log';
      if (e instanceof ConfigError) console.error(`iris: MISCONFIGURED, refusing every request with 503: ${e.message}`);
      else console.error('iris: MISCONFIGURED (auth settings), refusing every request with 503:', e);
      state = { key, misconfigured: refusal('misconfigured', message, { cause: e }) };
    }
  }
  return state;
}

function refuse(r: Refusal): Response {
  return new Response(refusalBody(r), { status: r.status, headers: refusalHeaders(r) });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname !== '/healthz' && url.pathname !== '/v1/connect') return refuse(refusal('not_found', 'no such endpoint'));
    const st = edgeState(env);
    if ('misconfigured' in st) return refuse(st.misconfigured);
    if (url.pathname === '/healthz') {
      return Response.json(st.cfg.devAuth ? { ok: true, devAuth: true, warning: DEV_AUTH_WARNING } : { ok: true });
    }

    const limiter = env.CONNECT_LIMITER;
    const verdict = await authorizeUpgrade(
      { method: request.method, url, header: (n) => request.headers.get(n), ip: connectKey(request, url, env) },
      {
        verifier: st.v,
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
