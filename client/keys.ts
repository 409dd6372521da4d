import type { ClientFrame, Devices, DevicesQuery, KemPrekey, KeyBundleEntry, KeysBundle, KeysFetch, KeysState, KeysUpload, Prekey, SignedPrekey } from '../protocol/index.js';
import { IrisError } from './errors.js';
import type { IdGenerator } from './ids.js';
import type { LinkSource } from './link.js';

export type { KemPrekey, KeyBundleEntry, Prekey, SignedPrekey };

/** What uploadKeys() publishes for this device (PROTOCOL.md 8.9). Keys are opaque bytes to the server. */
export interface KeysInput {
  /** The identity public key. Omit to keep the stored one; a different one starts the device over. */
  identity?: Uint8Array;
  signed?: SignedPrekey;
  /** The post-quantum last-resort KEM prekey (Signal's Kyber last-resort prekey). */
  lastResort?: KemPrekey;
  /** One-time prekeys added to the pool (an id already stored is replaced). */
  prekeys?: Prekey[];
}

/** A device's pool: the answer to uploadKeys(), and the `keysLow` event. */
export interface KeysStateInfo {
  device: string;
  count: number;
  /** Below the server's threshold: upload more one-time prekeys. */
  low: boolean;
}

type Request = KeysUpload | KeysFetch | DevicesQuery;
type Answer = KeysState | KeysBundle | Devices;

interface Pending {
  frame: Request;
  resolve: (f: Answer) => void;
  reject: (e: IrisError) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Generation of the socket it was last written to (0: none): a new connection gets it again. */
  gen: number;
}

/**
 * The key directory's requests (uploadKeys, fetchBundle, devices), each waiting for its answer by ref and written
 * again to a new connection until answered, like presence queries. A fetch written twice (its connection dropped
 * before the answer) may spend a second one-time prekey at the server; never the same one twice.
 */
export class KeyDirectory {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly link: LinkSource,
    private readonly ids: IdGenerator,
    private readonly timeoutMs: number,
    private readonly low: (e: KeysStateInfo) => void,
  ) {}

  async upload(keys: KeysInput): Promise<KeysStateInfo> {
    const f = await this.ask({ t: 'keys_upload', ref: this.ids.next('k'), identity: keys.identity ?? new Uint8Array(0), prekeys: keys.prekeys ?? [], ...(keys.signed && { signed: keys.signed }), ...(keys.lastResort && { lastResort: keys.lastResort }) });
    if (f.t !== 'keys_state') throw new IrisError('internal', `unexpected answer ${f.t}`);
    return { device: f.device, count: f.count, low: f.low };
  }

  async fetchBundle(user: string): Promise<KeyBundleEntry[]> {
    const f = await this.ask({ t: 'keys_fetch', ref: this.ids.next('b'), user });
    if (f.t !== 'keys_bundle') throw new IrisError('internal', `unexpected answer ${f.t}`);
    return f.devices;
  }

  async devices(user: string): Promise<string[]> {
    const f = await this.ask({ t: 'devices_query', ref: this.ids.next('v'), user });
    if (f.t !== 'devices') throw new IrisError('internal', `unexpected answer ${f.t}`);
    return f.devices;
  }

  /** A server frame of the key directory: an answer by ref, or (keys_state without ref) the low-pool push. */
  frame(f: Answer): void {
    if (f.t === 'keys_state' && f.ref === '') return this.low({ device: f.device, count: f.count, low: f.low });
    const p = this.take(f.ref);
    p?.resolve(f);
  }

  /** An error frame about `ref`: true when it was one of these requests (now rejected with `err`). */
  refused(ref: string, err: IrisError): boolean {
    const p = this.take(ref);
    p?.reject(err);
    return p !== null;
  }

  /** A new connection: requests not yet written to it go out again. */
  rewrite(): void {
    for (const p of this.pending.values()) this.write(p);
  }

  rejectAll(err: IrisError): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err.withRef(p.frame.ref));
    }
    this.pending.clear();
  }

  private ask(frame: Request): Promise<Answer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(frame.ref);
        reject(new IrisError('timeout', `no ${frame.t} answer in time`, { ref: frame.ref }));
      }, this.timeoutMs);
      const p: Pending = { frame, resolve, reject, timer, gen: 0 };
      this.pending.set(frame.ref, p);
      this.write(p);
    });
  }

  private take(ref: string): Pending | null {
    const p = this.pending.get(ref);
    if (!p) return null;
    this.pending.delete(ref);
    clearTimeout(p.timer);
    return p;
  }

  private write(p: Pending): void {
    const s = this.link.current();
    if (s === null || p.gen === s.gen) return;
    p.gen = s.gen;
    s.write(p.frame as ClientFrame);
  }
}
