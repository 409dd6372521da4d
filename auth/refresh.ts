import type { TokenCheck } from '../core/refresh.js';
import { MAX_TOKEN_LENGTH } from './request.js';
import { AuthError } from './errors.js';
import type { TokenVerifier } from './verify.js';

/**
 * The core's TokenCheck (core/refresh.ts) over a TokenVerifier: a `refresh` frame's token is verified by the very
 * code, keys and JWKS the upgrade uses. A key set that cannot be fetched is `unavailable` (retry); every other
 * refusal is `token_invalid`, its message saying which (the refusal code of PROTOCOL.md 3.3).
 */
export function tokenCheck(verifier: TokenVerifier): TokenCheck {
  return async (token) => {
    if (token.length > MAX_TOKEN_LENGTH) return { ok: false, code: 'token_invalid', message: `token_too_large: longer than ${MAX_TOKEN_LENGTH} characters` };
    try {
      const id = await verifier.verify(token);
      const claims: { jti?: string; iat?: number; exp?: number } = {};
      if (id.jti !== undefined) claims.jti = id.jti;
      if (id.iat !== undefined) claims.iat = id.iat;
      if (id.exp !== undefined) claims.exp = id.exp;
      return { ok: true, user: id.user, claims };
    } catch (e) {
      if (!(e instanceof AuthError)) throw e;
      if (e.code === 'unavailable' || e.code === 'auth_not_configured') return { ok: false, code: 'unavailable', message: e.message };
      return { ok: false, code: 'token_invalid', message: `${e.code}: ${e.message}` };
    }
  };
}
