import {
  LIMITS,
  ProtocolError,
  type DevicesQuery,
  type KemPrekey,
  type KeyBundleEntry,
  type KeysFetch,
  type KeysState,
  type KeysUpload,
  type Prekey,
} from '../protocol/index.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import type { Clock, Conn, Logger, Peers, Sockets, Sql } from './ports.js';
import { TokenBucket } from './ratelimit.js';

/** How long a requester is told to wait when the owner's shard could not be reached. */
const UNAVAILABLE_RETRY_MS = 1_000;

interface DeviceKeysRow {
  [k: string]: string | number | Uint8Array | null;
  device: string;
  identity: Uint8Array;
  spk_id: number;
  spk: Uint8Array;
  spk_sig: Uint8Array;
  spk_ts: number;
  lr_id: number | null;
  lr: Uint8Array | null;
  lr_sig: Uint8Array | null;
  low: number;
}

/** Every query of the key directory (schema: core/schema.ts, tables device_keys and one_time_prekeys). */
export class KeyStore {
  constructor(
    private readonly sql: Sql,
    private readonly user: string,
  ) {}

  devices(): DeviceKeysRow[] {
    return this.sql.all<DeviceKeysRow>(`SELECT device, identity, spk_id, spk, spk_sig, spk_ts, lr_id, lr, lr_sig, low FROM device_keys WHERE user = ? ORDER BY device`, this.user);
  }

  device(device: string): DeviceKeysRow | undefined {
    return this.sql.all<DeviceKeysRow>(`SELECT device, identity, spk_id, spk, spk_sig, spk_ts, lr_id, lr, lr_sig, low FROM device_keys WHERE user = ? AND device = ?`, this.user, device)[0];
  }

  deviceIds(): string[] {
    return this.sql.all<{ device: string }>(`SELECT device FROM device_keys WHERE user = ? ORDER BY device`, this.user).map((r) => r.device);
  }

  /** The device's prekeys, counted up to `upTo` rows (a fetch needs only "below the threshold or not"). */
  count(device: string, upTo = -1): number {
    return this.sql.all<{ n: number }>(`SELECT count(*) AS n FROM (SELECT 1 FROM one_time_prekeys WHERE user = ? AND device = ? LIMIT ?)`, this.user, device, upTo)[0]!.n;
  }

  prekeyIds(device: string): Set<number> {
    return new Set(this.sql.all<{ id: number }>(`SELECT id FROM one_time_prekeys WHERE user = ? AND device = ?`, this.user, device).map((r) => r.id));
  }

  /** Removes and returns the device's lowest-numbered one-time prekey. Inside a commit. */
  takePrekey(device: string): Prekey | undefined {
    const row = this.sql.all<{ id: number; key: Uint8Array }>(`SELECT id, key FROM one_time_prekeys WHERE user = ? AND device = ? ORDER BY id LIMIT 1`, this.user, device)[0];
    if (!row) return undefined;
    this.sql.all(`DELETE FROM one_time_prekeys WHERE user = ? AND device = ? AND id = ?`, this.user, device, row.id);
    return { id: row.id, key: row.key };
  }

  /** Forgets a device's keys, pool included (a new identity key starts over). */
  dropDevice(device: string): void {
    this.sql.all(`DELETE FROM one_time_prekeys WHERE user = ? AND device = ?`, this.user, device);
    this.sql.all(`DELETE FROM device_keys WHERE user = ? AND device = ?`, this.user, device);
  }

  putDevice(device: string, identity: Uint8Array, s: { id: number; key: Uint8Array; sig: Uint8Array; ts: number }, lr: KemPrekey | null, low: number, now: number): void {
    this.sql.all(
      `INSERT OR REPLACE INTO device_keys (user, device, identity, spk_id, spk, spk_sig, spk_ts, lr_id, lr, lr_sig, low, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      this.user, device, identity, s.id, s.key, s.sig, s.ts, lr?.id ?? null, lr?.key ?? null, lr?.sig ?? null, low, now,
    );
  }

  putPrekey(device: string, k: Prekey): void {
    this.sql.all(`INSERT OR REPLACE INTO one_time_prekeys (user, device, id, key) VALUES (?, ?, ?, ?)`, this.user, device, k.id, k.key);
  }

  setLow(device: string, low: number): void {
    this.sql.all(`UPDATE device_keys SET low = ? WHERE user = ? AND device = ?`, low, this.user, device);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

function entryOf(r: DeviceKeysRow, prekey: Prekey | undefined): KeyBundleEntry {
  const e: KeyBundleEntry = { device: r.device, identity: r.identity, signed: { id: r.spk_id, key: r.spk, sig: r.spk_sig, ts: r.spk_ts } };
  if (r.lr_id !== null && r.lr !== null && r.lr_sig !== null) e.lastResort = { id: r.lr_id, key: r.lr, sig: r.lr_sig };
  if (prekey) e.prekey = prekey;
  return e;
}

export interface KeysDeps {
  user: string;
  sql: Sql;
  peers: Peers;
  sockets: Sockets;
  clock: Clock;
  config: Config;
  log: Logger;
  out: Delivery;
  /** The mailbox's Storage.commit (dropping its caches on failure). */
  tx<T>(fn: () => T): Promise<T>;
}

/** What the key directory did here: the benchmark and the tests read it. */
export interface KeysCounts {
  /** Bundles handed out by this (owner) shard, and the one-time prekeys removed with them. */
  bundles: number;
  prekeysTaken: number;
  /** keys_state pushes for a pool that fell below the threshold. */
  lowPushes: number;
}

/**
 * The key directory (PROTOCOL.md 8.9), both ends of it.
 *
 * Owner side (the shard of the user whose keys they are): uploads replace the device's identity key, signed
 * prekey and last-resort KEM prekey and top its one-time pool up to IRIS_KEYS_POOL_CAP (an upload past it is
 * refused whole, so a client learns how many fit instead of losing some silently; a stored id is replaced, so a
 * retried upload counts once). A fetch (take) reads every device's row and removes ONE one-time prekey per device
 * in the same commit, so two fetches, however concurrent, never get the same prekey: Storage.commit runs its
 * function synchronously, one at a time, and the answer leaves after it resolved. A pool that falls below
 * IRIS_KEYS_LOW marks its row `low` in that commit and pushes `keys_state` to the owner's connections that named
 * HELLO_FEATURES.keys: once per crossing, re-armed only by an upload that brings it back to the threshold. A
 * device whose hello names the feature is also told at hello while its pool is below (it may have missed the push).
 *
 * Requester side: a keys_fetch or devices_query spends a token of a bucket of its own (IRIS_KEYS_FETCH_PER_SEC /
 * _BURST, per requesting user: it cannot starve sends, and nobody drains a pool faster than it), then calls the
 * owner's shard (Peers.fetchKeys / keyDevices), or this one for the user's own keys.
 */
export class KeysHub {
  readonly counts: KeysCounts = { bundles: 0, prekeysTaken: 0, lowPushes: 0 };
  private readonly store: KeyStore;
  private readonly bucket: TokenBucket;

  constructor(private readonly deps: KeysDeps) {
    this.store = new KeyStore(deps.sql, deps.user);
    this.bucket = new TokenBucket(deps.config.keysFetchPerSec, deps.config.keysFetchBurst, deps.clock.now());
  }

  // ---------------------------------------------------------------- frames of this user's connections

  async onUpload(conn: Conn, f: KeysUpload): Promise<void> {
    const st = conn.state!;
    if (this.limited(conn, f.ref)) return;
    const bad = (msg: string): never => {
      throw new ProtocolError('invalid_field', msg, f.ref);
    };
    if (f.signed && (f.signed.key.byteLength === 0 || f.signed.sig.byteLength === 0)) bad('signed: key and sig must not be empty');
    if (f.lastResort && (f.lastResort.key.byteLength === 0 || f.lastResort.sig.byteLength === 0)) bad('lastResort: key and sig must not be empty');
    const ids = new Set<number>();
    for (const k of f.prekeys) {
      if (k.key.byteLength === 0) bad(`prekeys: key ${k.id} is empty`);
      if (ids.has(k.id)) bad(`prekeys: id ${k.id} twice`);
      ids.add(k.id);
    }
    const { keysPoolCap: cap, keysLowThreshold: threshold } = this.deps.config;
    const now = this.deps.clock.now();
    const r = await this.deps.tx(() => {
      let cur = this.store.device(st.device);
      if (cur && f.identity.byteLength > 0 && !sameBytes(cur.identity, f.identity)) {
        // A new identity: the old prekeys belong to the old identity's sessions. Start over.
        this.store.dropDevice(st.device);
        cur = undefined;
      }
      if (!cur && (f.identity.byteLength === 0 || !f.signed)) return { error: 'a device\'s first upload (or a new identity) must carry identity and signed' };
      if (!cur && this.store.deviceIds().length >= LIMITS.maxKeyDevices) return { tooMany: true as const };
      const stored = cur ? this.store.prekeyIds(st.device) : new Set<number>();
      let count = stored.size;
      for (const id of ids) if (!stored.has(id)) count++;
      if (count > cap) return { error: `prekeys: a device holds at most ${cap} one-time prekeys; ${stored.size} are stored, this upload would make ${count}` };
      const signed = f.signed ?? { id: cur!.spk_id, key: cur!.spk, sig: cur!.spk_sig, ts: cur!.spk_ts };
      const lr = f.lastResort ?? (cur && cur.lr_id !== null ? { id: cur.lr_id, key: cur.lr!, sig: cur.lr_sig! } : null);
      // Back at (or above) the threshold: the next fall below it is a new crossing, pushed again.
      const low = count >= threshold ? 0 : (cur?.low ?? 0);
      this.store.putDevice(st.device, f.identity.byteLength > 0 ? f.identity : cur!.identity, signed, lr, low, now);
      for (const k of f.prekeys) this.store.putPrekey(st.device, k);
      return { count };
    });
    if ('tooMany' in r) throw new ProtocolError('too_many_devices', `keys are kept for at most ${LIMITS.maxKeyDevices} devices of a user`, f.ref);
    if (r.error !== undefined) bad(r.error);
    const count = r.count!;
    this.deps.out.reply(conn, st.enc, { t: 'keys_state', ref: f.ref, device: st.device, count, low: count < threshold });
  }

  async onFetch(conn: Conn, f: KeysFetch): Promise<void> {
    if (this.limited(conn, f.ref)) return;
    const { peers, user } = this.deps;
    const devices = await (f.user === user ? this.take(user) : peers.fetchKeys ? peers.fetchKeys(f.user, user) : Promise.reject(new Error('no key directory'))).catch((e: unknown) => {
      this.deps.log.log('warn', `${user}: key bundle of ${f.user} not fetched`, e);
      return null;
    });
    const enc = conn.state!.enc;
    if (devices === null) return this.deps.out.error(conn, enc, 'unavailable', 'key directory unreachable; retry', f.ref, UNAVAILABLE_RETRY_MS);
    this.deps.out.reply(conn, enc, { t: 'keys_bundle', ref: f.ref, user: f.user, devices });
  }

  async onDevicesQuery(conn: Conn, f: DevicesQuery): Promise<void> {
    if (this.limited(conn, f.ref)) return;
    const { peers, user } = this.deps;
    const devices = await (f.user === user ? this.deviceIds() : peers.keyDevices ? peers.keyDevices(f.user) : Promise.reject(new Error('no key directory'))).catch(() => null);
    const enc = conn.state!.enc;
    if (devices === null) return this.deps.out.error(conn, enc, 'unavailable', 'key directory unreachable; retry', f.ref, UNAVAILABLE_RETRY_MS);
    this.deps.out.reply(conn, enc, { t: 'devices', ref: f.ref, user: f.user, devices });
  }

  /** A connection past hello that named HELLO_FEATURES.keys: told if its device's pool is below the threshold. */
  async hello(conn: Conn): Promise<void> {
    const st = conn.state;
    if (st?.keys !== true) return;
    const threshold = this.deps.config.keysLowThreshold;
    const r = await this.deps.tx(() => (this.store.device(st.device) ? this.store.count(st.device, threshold) : undefined));
    if (r !== undefined && r < threshold) this.deps.out.reply(conn, st.enc, { t: 'keys_state', ref: '', device: st.device, count: r, low: true });
  }

  // ---------------------------------------------------------------- the owner's side (Peers.fetchKeys / keyDevices)

  /**
   * This user's bundle for `requester`: one entry per device, each with its lowest one-time prekey, removed in this
   * very commit. Resolves after the commit; pushes keys_state for the pools that crossed below the threshold.
   */
  async take(requester: string): Promise<KeyBundleEntry[]> {
    void requester; // Who asked is the requester's shard's business (its rate limit); every fetcher is served alike.
    const threshold = this.deps.config.keysLowThreshold;
    const crossed: KeysState[] = [];
    const entries = await this.deps.tx(() => {
      crossed.length = 0;
      return this.store.devices().map((row) => {
        const prekey = this.store.takePrekey(row.device);
        if (prekey && row.low === 0) {
          const count = this.store.count(row.device, threshold);
          if (count < threshold) {
            this.store.setLow(row.device, 1);
            crossed.push({ t: 'keys_state', ref: '', device: row.device, count, low: true });
          }
        }
        return entryOf(row, prekey);
      });
    });
    this.counts.bundles++;
    this.counts.prekeysTaken += entries.filter((e) => e.prekey).length;
    for (const s of crossed) this.pushState(s);
    return entries;
  }

  /** The mailbox forgot `device` (IRIS_MAX_DEVICES): its keys are dropped in the same commit. Inside a commit. */
  forgetDevice(device: string): void {
    this.store.dropDevice(device);
  }

  /** The devices this user has published keys for. Inside a commit, so it sees only what is durable. */
  deviceIds(): Promise<string[]> {
    return this.deps.tx(() => this.store.deviceIds());
  }

  private pushState(s: KeysState): void {
    this.counts.lowPushes++;
    for (const c of this.deps.sockets.list()) {
      const st = c.state;
      if (st?.keys === true) this.deps.out.reply(c, st.enc, s);
    }
  }

  /** Takes a token of the key directory's bucket; on refusal answers rate_limited and returns true. */
  private limited(conn: Conn, ref: string): boolean {
    const wait = this.bucket.take(this.deps.clock.now());
    if (wait === 0) return false;
    this.deps.out.error(conn, conn.state!.enc, 'rate_limited', 'key directory rate exceeded', ref, wait);
    return true;
  }
}
