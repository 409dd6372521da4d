/** The frames of the key directory (PROTOCOL.md 8.9), apart from frames.ts so that it stays one screen per feature. */

/** A one-time prekey (Signal: an EC prekey): its id, chosen by the device, and the public key. Opaque to the server. */
export interface Prekey {
  id: number;
  key: Uint8Array;
}

/** A signed prekey: its id, the public key, the identity key's signature over it, and when the device made it. */
export interface SignedPrekey {
  id: number;
  key: Uint8Array;
  sig: Uint8Array;
  ts: number;
}

/** The post-quantum last-resort prekey (Signal: the Kyber last-resort prekey): id, KEM public key, signature. */
export interface KemPrekey {
  id: number;
  key: Uint8Array;
  sig: Uint8Array;
}

/**
 * Client: publish this device's keys (PROTOCOL.md 8.9). `identity`, `signed` and `lastResort` replace what is
 * stored (an empty `identity` or an absent `signed` / `lastResort` keeps it; a device's first upload must carry
 * identity and signed); `prekeys` top the one-time pool up (a stored id is replaced, not counted twice). A new
 * identity key drops the device's whole record first. Answered by `keys_state` with the same ref.
 */
export interface KeysUpload {
  t: 'keys_upload';
  ref: string;
  identity: Uint8Array;
  signed?: SignedPrekey;
  lastResort?: KemPrekey;
  prekeys: Prekey[];
}

/**
 * Server: how many one-time prekeys `device` has left. With a ref: the answer to that device's `keys_upload`.
 * Without (ref ""): a push to the owner's connections that named HELLO_FEATURES.keys, when the pool fell below the
 * server's threshold (once per crossing) and at hello while it stays below; `low` says it is below.
 */
export interface KeysState {
  t: 'keys_state';
  ref: string;
  device: string;
  count: number;
  low: boolean;
}

/** Client: fetch `user`'s key bundle, one entry per device. Answered by `keys_bundle` with the same ref. */
export interface KeysFetch {
  t: 'keys_fetch';
  ref: string;
  user: string;
}

/** One device's keys as a fetcher gets them. `prekey` absent: the device's one-time pool is empty. */
export interface KeyBundleEntry {
  device: string;
  identity: Uint8Array;
  signed: SignedPrekey;
  lastResort?: KemPrekey;
  /** Handed to this fetcher only: removed from the pool in the same transaction. */
  prekey?: Prekey;
}

/** Server: `user`'s bundle (no entries: the user has published no keys, or does not exist). */
export interface KeysBundle {
  t: 'keys_bundle';
  ref: string;
  user: string;
  devices: KeyBundleEntry[];
}

/** Client: which devices `user` has published keys for. Answered by `devices` with the same ref. Takes no key. */
export interface DevicesQuery {
  t: 'devices_query';
  ref: string;
  user: string;
}

/** Server: the ids of the devices `user` has published keys for, in id order. */
export interface Devices {
  t: 'devices';
  ref: string;
  user: string;
  devices: string[];
}
