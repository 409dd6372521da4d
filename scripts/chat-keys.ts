import { randomBytes } from 'node:crypto';
import { IrisError, type IrisClient, type KeysInput } from '../client/index.js';

/**
 * The chat CLI's key directory commands (PROTOCOL.md 8.9). The CLI is NOT an end-to-end-encryption client: it
 * sends its messages in the clear, and `/keys` publishes a demo bundle of random bytes (no real Curve25519 or
 * Kyber keys, no signatures anyone could verify) only to show what the server stores and hands out.
 */

const rand = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

/** A demo bundle: random bytes of Signal's sizes (33-byte EC keys, 64-byte signatures, a 1569-byte Kyber key). */
export function demoBundle(prekeyCount: number, firstId: number): KeysInput {
  return {
    identity: rand(33),
    signed: { id: 1, key: rand(33), sig: rand(64), ts: Date.now() },
    lastResort: { id: 1, key: rand(1569), sig: rand(64) },
    prekeys: Array.from({ length: prekeyCount }, (_, i) => ({ id: firstId + i, key: rand(33) })),
  };
}

const why = (e: unknown): string => (e instanceof IrisError ? `${e.code}: ${e.message}${e.retryAfter ? ` (retry in ${e.retryAfter} ms)` : ''}` : String(e));

/** `/keys [N]`: uploads a demo bundle with N (default 20) one-time prekeys. */
export async function uploadDemoKeys(client: IrisClient, count: number, out: (s: string) => void): Promise<void> {
  try {
    // Ids from the clock, so that a second /keys adds prekeys instead of replacing the same ids.
    const st = await client.uploadKeys(demoBundle(count, Math.floor(Date.now() / 1000) % 1_000_000_000));
    out(`* demo keys (random bytes, not an E2E client) published for ${st.device}: ${st.count} one-time prekey(s) stored${st.low ? ' (below the server\'s threshold)' : ''}`);
  } catch (e) {
    out(`! keys: ${why(e)}`);
  }
}

/** `/bundle USER`: fetches USER's bundle (taking one one-time prekey per device) and prints what came back. */
export async function printBundle(client: IrisClient, user: string, out: (s: string) => void): Promise<void> {
  try {
    const entries = await client.fetchBundle(user);
    if (entries.length === 0) return out(`* ${user} has published no keys`);
    for (const e of entries) {
      const one = e.prekey ? `one-time prekey #${e.prekey.id}` : 'no one-time prekey (pool empty)';
      const lr = e.lastResort ? `, last-resort #${e.lastResort.id} (${e.lastResort.key.byteLength} B)` : '';
      out(`* ${user}/${e.device}: identity ${e.identity.byteLength} B, signed prekey #${e.signed.id}${lr}, ${one}`);
    }
  } catch (e) {
    out(`! bundle: ${why(e)}`);
  }
}
