import type { JSONWebKeySet } from 'jose';

/** Development HS256 secret: used only when IRIS_DEV_MODE=1 and no secret is configured (npm start, tests). */
export const DEV_SECRET = 'iris-dev-secret-not-for-production';

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
}

/**
 * Reads auth settings from IRIS_* variables (Worker env or process.env):
 * IRIS_JWT_SECRET, IRIS_JWKS (JSON), IRIS_JWKS_URL, IRIS_JWT_ISSUER, IRIS_JWT_AUDIENCE,
 * IRIS_JWT_CLOCK_TOLERANCE (seconds, default 30), IRIS_DEV_MODE (1: fall back to DEV_SECRET).
 */
export function authConfigFromEnv(env: Record<string, unknown>): AuthConfig {
  const str = (k: string): string | undefined => {
    const v = env[k];
    return typeof v === 'string' && v !== '' ? v : undefined;
  };
  const cfg: AuthConfig = { clockToleranceSec: Number(str('IRIS_JWT_CLOCK_TOLERANCE') ?? 30) };
  const secret = str('IRIS_JWT_SECRET') ?? (str('IRIS_DEV_MODE') === '1' ? DEV_SECRET : undefined);
  if (secret !== undefined) cfg.secret = secret;
  const jwks = str('IRIS_JWKS');
  if (jwks !== undefined) cfg.jwks = JSON.parse(jwks) as JSONWebKeySet;
  const jwksUrl = str('IRIS_JWKS_URL');
  if (jwksUrl !== undefined) cfg.jwksUrl = jwksUrl;
  const iss = str('IRIS_JWT_ISSUER');
  if (iss !== undefined) cfg.issuer = iss;
  const aud = str('IRIS_JWT_AUDIENCE');
  if (aud !== undefined) cfg.audience = aud;
  return cfg;
}
