import type { KeyBundleEntry, KeysBundle, KeysUpload } from '../../protocol/index.js';
import { CborError, cborDecode, cborEncode, type CborValue } from './cbor.js';
import { OP } from './codec.js';

/**
 * The v1 key packets on this Iris's key directory (core/keys.ts, PROTOCOL.md 8.9). The old bundle is one key set per
 * user, a CBOR map (iris_keys.erl): `identity_key`, `signed_prekey`, `signed_prekey_signature`,
 * `signed_prekey_timestamp` (optional), `one_time_prekeys` (a list of keys, without ids). Here keys are per device:
 * a v1 client is its user's device `v1`, and uploads and fetches go through the core like an SDK client's
 * `keys_upload` / `keys_fetch`, so prekeys are handed out once and never again (deleted in the commit that reads
 * them). The old prekeys have no ids; each gets the 32-bit FNV-1a hash of its key, so uploading a key again
 * replaces it instead of counting it twice.
 */

/** What a 0x20 bundle becomes: the upload frame, or the reason it is refused (answered 0x22 status "error"). */
export function uploadOf(bundle: Uint8Array, ref: string, nowMs: number): KeysUpload | { error: string } {
  let m: CborValue;
  try {
    m = cborDecode(bundle);
  } catch (e) {
    if (e instanceof CborError) return { error: 'invalid_keybundle' };
    throw e;
  }
  if (typeof m !== 'object' || m === null || m instanceof Uint8Array || Array.isArray(m)) return { error: 'invalid_keybundle' };
  const ik = m['identity_key'];
  const spk = m['signed_prekey'];
  const sig = m['signed_prekey_signature'];
  if (!(ik instanceof Uint8Array) || !(spk instanceof Uint8Array) || !(sig instanceof Uint8Array)) return { error: 'missing_required_fields' };
  const ts = m['signed_prekey_timestamp'];
  const otks = m['one_time_prekeys'] ?? [];
  if (!Array.isArray(otks) || otks.some((k) => !(k instanceof Uint8Array))) return { error: 'invalid_keybundle' };
  return {
    t: 'keys_upload',
    ref,
    identity: ik,
    signed: { id: keyId(spk), key: spk, sig, ts: typeof ts === 'number' && Number.isSafeInteger(ts) && ts >= 0 ? ts : nowMs },
    prekeys: (otks as Uint8Array[]).map((key) => ({ id: keyId(key), key })),
  };
}

/** The old bundle map of `user`'s keys: its v1 device's if it has one, else its first device's. */
export function bundleMapOf(b: KeysBundle, device: string): CborValue {
  const e: KeyBundleEntry | undefined = b.devices.find((d) => d.device === device) ?? b.devices[0];
  if (!e) return { status: 'not_found' };
  return {
    identity_key: e.identity,
    signed_prekey: e.signed.key,
    signed_prekey_signature: e.signed.sig,
    signed_prekey_timestamp: e.signed.ts,
    one_time_prekey: e.prekey?.key,
    one_time_prekey_index: e.prekey?.id,
    spk_fallback_mode: e.prekey === undefined,
    device: e.device,
  };
}

/** 0x22 PREKEY_RESPONSE: blen:32 then the CBOR map. */
export function encodePrekeyResponse(map: CborValue): Uint8Array {
  const cbor = cborEncode(map);
  const out = new Uint8Array(5 + cbor.length);
  out[0] = OP.prekeyResponse;
  new DataView(out.buffer).setUint32(1, cbor.length);
  out.set(cbor, 5);
  return out;
}

/** FNV-1a, 32 bits: the id of an old (unnumbered) prekey. */
function keyId(key: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const x of key) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return h;
}
