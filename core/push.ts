import type { Clock, Logger, Metrics, PushHttp, Scheduler } from './ports.js';
import { readNumber, readString } from './settings.js';

/**
 * Push webhooks (docs/OPERATIONS.md "Push webhooks"): when a message lands in a user's inbox for a registered
 * device that has no open socket, the app's server is told with one signed HTTP POST, so that it can wake the
 * phone (APNs / FCM / Web Push). The body is never sent: only who, from whom, where, which message and how many.
 *
 * In memory and best effort, by design: the message itself is durable and is delivered when the device
 * connects; a push is a hint to connect. So nothing here writes to storage, and nothing on the message path
 * awaits it: landed() runs after the commit and only records; calls leave from tick(), on the shard's own
 * wake-up (the Durable Object's alarm, the on-prem timer), and their promises are handed to `background`
 * (ctx.waitUntil) and never awaited. A shard that is evicted or crashes while a push waits loses that push.
 *
 * Coalescing: the first message for a device opens a window of coalesceMs; every message landing in it (or while
 * a call is in flight, or waiting for its retry) adds to the same call's count, and the call names the latest
 * message. Retries: a network error, a timeout or a non-2xx answer is retried after retryBaseMs doubling up to
 * RETRY_CEILING_MS, with full jitter; after maxAttempts calls the push is dropped and counted dead-lettered.
 */

/** The settings, read from IRIS_PUSH_* (core/settings.ts); `url` undefined: push is off. */
export interface PushSettings {
  url: string | undefined;
  secret: string;
  coalesceMs: number;
  retryBaseMs: number;
  maxAttempts: number;
  timeoutMs: number;
}

export function pushSettingsFromEnv(env: Record<string, unknown>): PushSettings {
  return {
    url: readString(env, 'IRIS_PUSH_URL'),
    secret: readString(env, 'IRIS_PUSH_SECRET') ?? '',
    coalesceMs: readNumber(env, 'IRIS_PUSH_COALESCE_MS'),
    retryBaseMs: readNumber(env, 'IRIS_PUSH_RETRY_BASE_MS'),
    maxAttempts: readNumber(env, 'IRIS_PUSH_MAX_ATTEMPTS'),
    timeoutMs: readNumber(env, 'IRIS_PUSH_TIMEOUT_MS'),
  };
}

/** The JSON body of one call. `count` messages landed for `device` since the last call that succeeded. */
export interface PushPayload {
  user: string;
  device: string;
  /** The sender of the latest message counted. */
  sender: string;
  /** The conversation as `user` names it (1:1: the sender's id). */
  conversation: string;
  /** The server id of the latest message counted. */
  msg: string;
  count: number;
  /** When the latest message was accepted (ms since epoch). */
  ts: number;
}

/** One message that landed, as the mailbox reports it after its commit. */
export interface Landed {
  sender: string;
  conversation: string;
  msg: string;
  ts: number;
}

/** What the adapter gives the mailbox to push with; absent (or url unset): no push. */
export interface PushDeps {
  settings: PushSettings;
  http: PushHttp;
  /** Keeps the platform alive for a call nobody awaits (Cloudflare: ctx.waitUntil); on-prem not needed. */
  background?: (p: Promise<unknown>) => void;
}

/** PushHttp over the platform's fetch (both profiles have one). */
export const fetchPushHttp: PushHttp = {
  async post(url, body, headers, timeoutMs) {
    const res = await fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer().catch(() => undefined);
    return res.status;
  },
};

export const SIGNATURE_HEADER = 'X-Iris-Signature';
export const TIMESTAMP_HEADER = 'X-Iris-Timestamp';
/** Retries never wait longer than this between two calls. */
const RETRY_CEILING_MS = 5 * 60_000;

/** HMAC-SHA256 of `${timestamp}.${body}` with the secret, as lowercase hex (WebCrypto: Node and workerd alike). */
export async function pushSignature(secret: string, timestamp: string, body: string): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey('raw', enc.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = new Uint8Array(await crypto.subtle.sign('HMAC', key, enc.encode(`${timestamp}.${body}`)));
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join('');
}

interface Pending {
  latest: Landed;
  count: number;
  /** When the next call may leave. */
  due: number;
  /** Calls made so far for this count (0: none yet). */
  attempts: number;
  flying: boolean;
  /** Messages that landed while a call was in flight: they ride on the next call. */
  extra: number;
  extraLatest: Landed | null;
}

export interface PushPorts {
  user: string;
  clock: Clock;
  scheduler: Scheduler;
  log: Logger;
  metrics?: Metrics | undefined;
  random: () => number;
  /** The user's registered devices (the devices table). */
  devices: () => string[];
  /** How many devices are registered (cached; lets landed() skip the devices query when all are online). */
  deviceCount: () => number;
  /** Devices with an open socket past hello: they get nothing. */
  online: () => Set<string>;
}

export class Pusher {
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly deps: PushDeps,
    private readonly ports: PushPorts,
  ) {}

  /** After the commit that stored them: counts each message for every registered device that is offline. */
  landed(items: Landed[]): void {
    if (items.length === 0) return;
    const online = this.ports.online();
    const now = this.ports.clock.now();
    const latest = items[items.length - 1]!;
    if (online.size >= this.ports.deviceCount()) return;
    for (const device of this.ports.devices()) {
      if (online.has(device)) continue;
      const p = this.pending.get(device);
      if (!p) {
        const due = now + this.deps.settings.coalesceMs;
        this.pending.set(device, { latest, count: items.length, due, attempts: 0, flying: false, extra: 0, extraLatest: null });
        this.ports.scheduler.wakeAt(due);
      } else if (p.flying) {
        p.extra += items.length;
        p.extraLatest = latest;
      } else {
        p.count += items.length;
        p.latest = latest;
      }
    }
  }

  /** The shard's wake-up: sends every push that is due. Returns at once; the calls run in the background. */
  tick(): void {
    const now = this.ports.clock.now();
    let online: Set<string> | null = null;
    let next = Infinity;
    for (const [device, p] of this.pending) {
      if (p.flying) continue;
      if (p.due > now) {
        next = Math.min(next, p.due);
        continue;
      }
      online ??= this.ports.online();
      // Connected meanwhile (before the first call or between retries): it gets the messages over its socket, a
      // push would only be noise.
      if (online.has(device)) {
        this.pending.delete(device);
        continue;
      }
      p.flying = true;
      const call = this.call(device, p);
      this.deps.background?.(call);
    }
    // The wake that ran this was spent (the platform keeps one, the earliest): ask again for what is still waiting.
    if (next !== Infinity) this.ports.scheduler.wakeAt(next);
  }

  /** Pushes waiting or in flight (for tests and stats). */
  get size(): number {
    return this.pending.size;
  }

  private async call(device: string, p: Pending): Promise<void> {
    const s = this.deps.settings;
    const payload: PushPayload = { user: this.ports.user, device, sender: p.latest.sender, conversation: p.latest.conversation, msg: p.latest.msg, count: p.count, ts: p.latest.ts };
    const body = JSON.stringify(payload);
    let ok = false;
    let why = '';
    try {
      const timestamp = String(Math.floor(this.ports.clock.now() / 1000));
      const sig = await pushSignature(s.secret, timestamp, body);
      const headers = { 'content-type': 'application/json', [SIGNATURE_HEADER]: `sha256=${sig}`, [TIMESTAMP_HEADER]: timestamp };
      const status = await this.deps.http.post(s.url!, body, headers, s.timeoutMs);
      ok = status >= 200 && status < 300;
      if (!ok) why = `HTTP ${status}`;
    } catch (e) {
      why = e instanceof Error ? e.message : String(e);
    }
    p.flying = false;
    p.attempts++;
    const now = this.ports.clock.now();
    if (ok) {
      this.ports.metrics?.pushSent?.();
      this.pending.delete(device);
    } else if (p.attempts >= s.maxAttempts) {
      this.ports.metrics?.pushFailed?.();
      this.ports.metrics?.pushDeadLettered?.();
      this.ports.log.log('warn', `${this.ports.user}: push for device ${device} dropped after ${p.attempts} attempts (${why})`);
      this.pending.delete(device);
    } else {
      this.ports.metrics?.pushFailed?.();
      const step = Math.min(RETRY_CEILING_MS, s.retryBaseMs * 2 ** (p.attempts - 1));
      // Full jitter in the upper half: receivers that failed together do not get their retries together.
      p.due = now + Math.ceil(step * (0.5 + 0.5 * this.ports.random()));
      this.ports.scheduler.wakeAt(p.due);
    }
    if (p.extra > 0) {
      const rest = { ...p, count: p.extra, latest: p.extraLatest!, extra: 0, extraLatest: null };
      const kept = this.pending.get(device);
      if (kept) {
        // Still retrying: the new messages join the retry's count.
        kept.count += p.extra;
        kept.latest = p.extraLatest!;
        kept.extra = 0;
        kept.extraLatest = null;
      } else {
        rest.attempts = 0;
        rest.due = now + s.coalesceMs;
        this.pending.set(device, rest);
        this.ports.scheduler.wakeAt(rest.due);
      }
    }
  }
}
