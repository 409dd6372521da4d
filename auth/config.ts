import type { JSONWebKeySet } from 'jose';
import { readNumber, readString } from '../core/settings.js';

/**
 * Development HS256 secret. It is public (it is in this file and in the README), so a server that accepts it
 * accepts tokens anyone can mint for any user. It is accepted only when development mode was asked for
 * explicitly AND no key of any kind is configured (see devAuthDecision); such a server says so at start and
 * on /healthz.
 */
export const DEV_SECRET = 'iris-dev-secret-not-for-production';

/** The one sentence every profile shows (start-up banner, /healthz) while the development secret is accepted. */
export const DEV_AUTH_WARNING = `tokens signed with the PUBLIC development secret are accepted: anyone can mint one for any user (IRIS_DEV_MODE=1 and no IRIS_JWT_SECRET, IRIS_JWKS or IRIS_JWKS_URL)`;

export interface AuthConfig {
  /** HS256 shared secret. */
  secret?: string;
  /** Public keys for RS256 / ES256 / EdDSA tokens: inline, or fetched (and cached) from a URL. */
  jwks?: JSONWebKeySet;
  jwksUrl?: string;
  /** Required `iss` and `aud` when set. */
  issuer?: string;
  audience?: string;
  /** Allowed clock skew for exp / nbf, in seconds. */
  clockToleranceSec: number;
  /**
   * True when tokens signed with the public DEV_SECRET verify: development mode without any configured key,
   * or (by mistake) IRIS_JWT_SECRET set to DEV_SECRET itself. Adapters warn loudly while it is true.
   */
  devAuth: boolean;
}

/** The variables that configure a real key. Any one of them switches the development secret off for good. */
export const KEY_SETTINGS = ['IRIS_JWT_SECRET', 'IRIS_JWKS', 'IRIS_JWKS_URL'] as const;

export type DevAuthDecision =
  /** A key is configured: the development secret is never accepted, whatever IRIS_DEV_MODE says. */
  | 'keys'
  /** No key, development mode asked for: the development secret is the key. */
  | 'dev'
  /** No key and no development mode: every token is refused (edge: 503; on-prem: refuses to start). */
  | 'none';

function str(env: Record<string, unknown>, k: string): string | undefined {
  const v = env[k];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** True only for an explicit IRIS_DEV_MODE=1 (or "true"): anything else, unset included, is production. */
export function devModeRequested(env: Record<string, unknown>): boolean {
  // Numbers and booleans too: a wrangler [vars] entry `IRIS_DEV_MODE = 1` is a number.
  const v = env['IRIS_DEV_MODE'];
  return v === '1' || v === 'true' || v === 1 || v === true;
}

/**
 * Whether the development secret may be used. It is the only place that decides it, for both profiles:
 * a configured key of any kind wins over development mode, so turning on a JWKS in production can never leave
 * the public secret accepted beside it.
 */
export function devAuthDecision(env: Record<string, unknown>): DevAuthDecision {
  // Any value counts as a key, not only a string: wrangler [vars] turns an IRIS_JWKS table into an object.
  if (KEY_SETTINGS.some((k) => env[k] !== undefined && env[k] !== null && env[k] !== '')) return 'keys';
  return devModeRequested(env) ? 'dev' : 'none';
}

/**
 * Reads auth settings from IRIS_* variables (Worker env or process.env): IRIS_JWT_SECRET, IRIS_JWKS (JSON),
 * IRIS_JWKS_URL, IRIS_JWT_ISSUER, IRIS_JWT_AUDIENCE, IRIS_JWT_CLOCK_TOLERANCE, IRIS_DEV_MODE (types, defaults
 * and ranges in core/settings.ts). Throws ConfigError for a value the schema refuses: a clock tolerance jose
 * would choke on at every verification, a JWKS that is not JSON, an IRIS_DEV_MODE of "yes".
 */
export function authConfigFromEnv(env: Record<string, unknown>): AuthConfig {
  const cfg: AuthConfig = { clockToleranceSec: readNumber(env, 'IRIS_JWT_CLOCK_TOLERANCE'), devAuth: false };
  readString(env, 'IRIS_DEV_MODE');
  const secret = readString(env, 'IRIS_JWT_SECRET') ?? (devAuthDecision(env) === 'dev' ? DEV_SECRET : undefined);
  if (secret !== undefined) cfg.secret = secret;
  cfg.devAuth = secret === DEV_SECRET;
  const jwks = readString(env, 'IRIS_JWKS');
  if (jwks !== undefined) cfg.jwks = JSON.parse(jwks) as JSONWebKeySet;
  const jwksUrl = readString(env, 'IRIS_JWKS_URL');
  if (jwksUrl !== undefined) cfg.jwksUrl = jwksUrl;
  const iss = readString(env, 'IRIS_JWT_ISSUER');
  if (iss !== undefined) cfg.issuer = iss;
  const aud = readString(env, 'IRIS_JWT_AUDIENCE');
  if (aud !== undefined) cfg.audience = aud;
  return cfg;
}
