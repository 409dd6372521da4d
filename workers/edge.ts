import { DEV_TOKEN_PATH, devToken, isLoopback } from '../auth/dev-token.js';
import {
  DEV_AUTH_WARNING,
  TokenVerifier,
  authConfigFromEnv,
  authorizeUpgrade,
  identityOf,
  isRefusal,
  refusal,
  refusalBody,
  refusalHeaders,
  type AuthConfig,
  type Refusal,
} from '../auth/index.js';
import type { Env } from '../durable-objects/env.js';
import { USER_HEADER } from '../durable-objects/user-shard.js';
import { TRACE_HEADER } from '../durable-objects/log.js';
import { traceId } from '../core/log-line.js';
import { edgePoint } from '../durable-objects/analytics.js';
import { ConfigError, readString, settingNames, validateSettings } from '../core/settings.js';
import { ADMIN_PREFIX, adminError, checkAdmin, isAdminAnswer, parseAdminRequest, type AdminAnswer } from '../core/admin.js';
import { TOKEN_HEADER, claimsHeader, claimsOf } from '../core/revocation.js';
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

function answer(a: AdminAnswer): Response {
  return Response.json(a.body, { status: a.status, headers: { 'cache-control': 'no-store' } });
}

/**
 * The admin API (core/admin.ts): the credential first (nothing about the request is looked at before), then the
 * call goes to the user's Durable Object, which holds the user's revocations and sockets. There is no view over
 * every object here: /admin/v1/stats says so and points at the per-user stats.
 */
async function admin(request: Request, url: URL, env: Env): Promise<Response> {
  const denied = await checkAdmin(readString(env, 'IRIS_ADMIN_SECRET'), request.headers.get('authorization'));
  if (denied) return answer(denied);
  const call = parseAdminRequest(request.method, url, Math.floor(Date.now() / 1000));
  if (isAdminAnswer(call)) return answer(call);
  if (call.op === 'stats') return answer({ status: 200, body: { profile: 'cloudflare', note: 'one Durable Object per user: see /admin/v1/users/<user>/stats' } });
  const stub = env.USERS.get(env.USERS.idFromName(call.user));
  try {
    return answer(await stub.admin(call));
  } catch (e) {
    // The object could not be reached (overloaded, reset): the operator retries; every admin call is idempotent.
    console.error('iris: admin call failed:', e);
    return answer(adminError('unavailable', "the user's shard could not be reached; retry"));
  }
}

function refuse(r: Refusal): Response {
  return new Response(refusalBody(r), { status: r.status, headers: refusalHeaders(r) });
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const isAdmin = url.pathname.startsWith(ADMIN_PREFIX);
    if (url.pathname !== '/healthz' && url.pathname !== '/v1/connect' && url.pathname !== DEV_TOKEN_PATH && !isAdmin) return refuse(refusal('not_found', 'no such endpoint'));
    if (url.pathname === DEV_TOKEN_PATH) {
      // The web chat's dev tokens (auth/dev-token.ts): only with the dev secret accepted and on a loopback host.
      const st = edgeState(env);
      const a = await devToken(url.searchParams, !('misconfigured' in st) && st.cfg.devAuth, isLoopback(url.hostname));
      return Response.json(a.body, { status: a.status, headers: { 'cache-control': 'no-store' } });
    }
    const st = edgeState(env);
    if ('misconfigured' in st) return refuse(st.misconfigured);
    if (isAdmin) return admin(request, url, env);
    if (url.pathname === '/healthz') {
      return Response.json(st.cfg.devAuth ? { ok: true, devAuth: true, warning: DEV_AUTH_WARNING } : { ok: true });
    }

    const limiter = env.CONNECT_LIMITER;
    const t0 = Date.now();
    const verdict = await authorizeUpgrade(
      { method: request.method, url, header: (n) => request.headers.get(n), ip: connectKey(request, url, env) },
      {
        verifier: st.v,
        ...(limiter && { connectLimit: async (ip: string) => ((await limiter.limit({ key: ip })).success ? 0 : 60) }),
      },
    );
    // One Analytics Engine point per upgrade request (durable-objects/analytics.ts): its outcome, the edge's time.
    edgePoint(env.METRICS, isRefusal(verdict) ? verdict.code : 'upgrade', Date.now() - t0);
    if (isRefusal(verdict)) {
      // A plain GET (how a client learns why its handshake failed) with a good token: revoked is the answer if so.
      if (verdict.code === 'upgrade_required') {
        const id = await identityOf({ method: request.method, url, header: (n) => request.headers.get(n), ip: '' }, st.v);
        if (id && (await env.USERS.get(env.USERS.idFromName(id.user)).isRevoked(id.user, claimsOf(id)).catch(() => false))) {
          return refuse(refusal('token_revoked', 'this token was revoked; get a new one'));
        }
      }
      return refuse(verdict);
    }

    // The only identity the shard trusts: set here, after verification, over whatever the client sent.
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set(USER_HEADER, verdict.user);
    // The claims the shard checks against the user's revocations and remembers with the socket (core/revocation.ts).
    headers.set(TOKEN_HEADER, claimsHeader(verdict));
    // The connection's trace id: the caller's W3C traceparent if it sent one, else a new one (core/log-line.ts).
    headers.set(TRACE_HEADER, traceId(request.headers.get('traceparent')));
    url.searchParams.delete('access_token');
    const stub = env.USERS.get(env.USERS.idFromName(verdict.user));
    return stub.fetch(new Request(url, { method: 'GET', headers }));
  },
} satisfies ExportedHandler<Env>;
