/** Where a v1 LOGIN (no length field) ends on a byte stream: codec.ts's decoder asks here. */

/** Longest `user:jwt` read: a user name and a generous token. */
export const MAX_LOGIN = 256 + 4096;
/** Base64url length of the HMAC of each HS algorithm (the old server signed HS256). */
const SIG_CHARS: Record<string, number> = { HS256: 43, HS384: 64, HS512: 86 };

/**
 * Whether `user:jwt` read so far is a whole LOGIN: a token of three parts whose header names an HS algorithm and
 * whose signature has that algorithm's exact length. Then nothing can follow it, and it need not wait for more.
 */
export function loginComplete(data: string): boolean {
  const parts = data.slice(data.indexOf(':') + 1).split('.');
  if (!data.includes(':') || parts.length !== 3) return false;
  try {
    const alg = (JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as { alg?: unknown }).alg;
    return typeof alg === 'string' && SIG_CHARS[alg] !== undefined && parts[2]!.length >= SIG_CHARS[alg]!;
  } catch {
    return false;
  }
}

