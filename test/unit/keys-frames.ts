import { LIMITS, type Frame, type KeyBundleEntry } from '../../protocol/index.js';

/**
 * Key directory frames (PROTOCOL.md 8.9) for the protocol suites (codec, fuzz, malformed): every one of them,
 * with and without the optional parts, and each at its largest (a bundle of maxKeyDevices entries with every key at
 * its size limit must still fit one frame in both encodings).
 */

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

const largest = (i: number): KeyBundleEntry => ({
  device: `device-${i}`.padEnd(LIMITS.maxIdLength, 'x'),
  identity: fill(LIMITS.maxKeyBytes, 1),
  signed: { id: Number.MAX_SAFE_INTEGER, key: fill(LIMITS.maxKeyBytes, 2), sig: fill(LIMITS.maxSignatureBytes, 3), ts: Number.MAX_SAFE_INTEGER },
  lastResort: { id: 2 ** 32, key: fill(LIMITS.maxKemKeyBytes, 4), sig: fill(LIMITS.maxSignatureBytes, 5) },
  prekey: { id: 16_777_215, key: fill(LIMITS.maxKeyBytes, 6) },
});

export const KEY_FRAMES: [string, Frame][] = [
  ['keys_upload, everything', { t: 'keys_upload', ref: 'k1', identity: fill(33, 5), signed: { id: 7, key: fill(33, 1), sig: fill(64, 2), ts: 1_700_000_000_000 }, lastResort: { id: 1, key: fill(1569, 3), sig: fill(64, 4) }, prekeys: [{ id: 1, key: fill(33, 9) }, { id: 2, key: fill(33, 8) }] }],
  ['keys_upload, top-up only', { t: 'keys_upload', ref: 'k2', identity: new Uint8Array(0), prekeys: [{ id: 3, key: fill(33, 7) }] }],
  ['keys_upload, largest', { t: 'keys_upload', ref: 'k3', identity: fill(LIMITS.maxKeyBytes, 1), signed: largest(0).signed, lastResort: largest(0).lastResort!, prekeys: Array.from({ length: LIMITS.maxPrekeysPerUpload }, (_, i) => ({ id: i, key: fill(LIMITS.maxKeyBytes, i) })) }],
  ['keys_state, answer', { t: 'keys_state', ref: 'k1', device: 'phone-1', count: 2, low: true }],
  ['keys_state, push', { t: 'keys_state', ref: '', device: 'phone-1', count: 19, low: false }],
  ['keys_fetch', { t: 'keys_fetch', ref: 'f1', user: 'alice' }],
  ['keys_bundle, empty', { t: 'keys_bundle', ref: 'f1', user: 'nobody', devices: [] }],
  ['keys_bundle, empty pool and no last resort', { t: 'keys_bundle', ref: 'f2', user: 'alice', devices: [{ device: 'laptop', identity: fill(33, 1), signed: { id: 1, key: fill(33, 2), sig: fill(64, 3), ts: 5 } }] }],
  ['keys_bundle, largest', { t: 'keys_bundle', ref: 'f3', user: 'alice', devices: Array.from({ length: LIMITS.maxKeyDevices }, (_, i) => largest(i)) }],
  ['devices_query', { t: 'devices_query', ref: 'q1', user: 'alice' }],
  ['devices', { t: 'devices', ref: 'q1', user: 'alice', devices: ['laptop', 'phone-1'] }],
  ['devices, none', { t: 'devices', ref: 'q2', user: 'nobody', devices: [] }],
];
