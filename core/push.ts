import type { Clock, Logger, Metrics, PushHttp, Scheduler, Sql } from './ports.js';
import { readNumber, readString } from './settings.js';

/**
 * Push webhooks (docs/OPERATIONS.md "Push webhooks"): when a message lands in a user's inbox for a registered
 * device that has no open socket, the app's server is told with one signed HTTP POST, so that it can wake the
 * phone (APNs / FCM / Web Push). The body is never sent: only who, from whom, where, which message and how many.
 *
 * Nothing on the message path awaits it: calls leave from tick(), on the shard's own wake-up (the Durable Object's
 * alarm, the on-prem timer), and their promises are handed to `background` (ctx.waitUntil) and never awaited.
 *
 * Pending pushes survive a restart (table push_pending, one row per device with a push waiting): the row is
 * written when a device's coalescing window OPENS, in the same commit as the message that opened it (plan(),
 * called inside that commit); messages joining an open window cost no row. It is rewritten after a failed call
 * (count, latest message, attempts, next due) and deleted once the push was sent, dropped or made pointless (the
 * device connected): about two rows per window and offline device, none per message in the window, none at all
 * while IRIS_PUSH_URL is unset (no Pusher). After a restart the rows are read back (load()) and sent from the
 * wake-up; a push counts the messages counted when its row was last written. Group entries are stored in the
 * group's shard, not here: their window's row is written in its own commit, just after (note()).
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
  /** Present (true) when the latest message is a group's: `conversation` is the group id, `msg` "<group>:<seq>". */
  group?: true;
}

/** One message that landed, as the mailbox reports it after its commit. */
export interface Landed {
  sender: string;
  conversation: string;
  msg: string;
  ts: number;
  /** How many messages this stands for (a group's coalesced note); 1 when absent. */
  count?: number;
  /** The latest message is a group's (payload `group: true`). */
  group?: boolean;
}

/** The offline devices that count some messages (plan()), for apply() after the commit that wrote their rows. */
export interface PushPlan {
  items: Landed[];
  devices: string[];
  /** Devices whose window row was written in that commit. */
  opened: Set<string>;
  due: number;
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
  /** The shard's storage: push_pending rows are read here, and written with tx (a commit of their own). */
  sql: Sql;
  tx: <T>(fn: () => T) => Promise<T>;
}

interface PendingRow {
  device: string;
  sender: string;
  conv: string;
  msg: string;
  ts: number;
  count: number;
  due: number;
  attempts: number;
  grp: number;
  [k: string]: string | number;
}

export class Pusher {
  private readonly pending = new Map<string, Pending>();
  private loaded = false;

  constructor(
    private readonly deps: PushDeps,
    private readonly ports: PushPorts,
  ) {}

  /** The rows a restart left (once per Pusher): their pushes are sent from the next wake-up, retries where they were. */
  load(): void {
    if (this.loaded) return;
    this.loaded = true;
    let next = Infinity;
    for (const r of this.ports.sql.all<PendingRow>(`SELECT device, sender, conv, msg, ts, count, due, attempts, grp FROM push_pending WHERE user = ?`, this.ports.user)) {
      if (this.pending.has(r.device)) continue;
      const latest: Landed = { sender: r.sender, conversation: r.conv, msg: r.msg, ts: r.ts, ...(r.grp === 1 && { group: true }) };
      this.pending.set(r.device, { latest, count: r.count, due: r.due, attempts: r.attempts, flying: false, extra: 0, extraLatest: null });
      next = Math.min(next, r.due);
    }
    if (next !== Infinity) this.ports.scheduler.wakeAt(next);
  }

  /**
   * INSIDE the commit that stores these messages: the offline devices that count them, and a push_pending row for
   * each one whose window opens now (one with a push already waiting costs no row). Null: nobody to push to.
   */
  plan(items: Landed[], skip?: (device: string) => boolean): PushPlan | null {
    const devices = this.targets(items, skip);
    if (devices.length === 0) return null;
    const due = this.ports.clock.now() + this.deps.settings.coalesceMs;
    const latest = items[items.length - 1]!;
    const count = countOf(items);
    const opened = new Set<string>();
    for (const device of devices) {
      if (this.pending.has(device)) continue;
      this.write(device, { latest, count, due, attempts: 0 }, true);
      opened.add(device);
    }
    return { items, devices, opened, due };
  }

  /** After that commit resolved: the messages count in memory, and a window opens for a device with none. */
  apply(plan: PushPlan | null): void {
    if (!plan) return;
    const latest = plan.items[plan.items.length - 1]!;
    const count = countOf(plan.items);
    const unwritten: string[] = [];
    for (const device of plan.devices) {
      const p = this.pending.get(device);
      if (!p) {
        this.pending.set(device, { latest, count, due: plan.due, attempts: 0, flying: false, extra: 0, extraLatest: null });
        this.ports.scheduler.wakeAt(plan.due);
        // Its earlier window closed between the plan and now: this one's row was not written with the messages.
        if (!plan.opened.has(device)) unwritten.push(device);
      } else if (p.flying) {
        p.extra += count;
        p.extraLatest = latest;
      } else {
        p.count += count;
        p.latest = latest;
      }
    }
    if (unwritten.length > 0) this.save(unwritten);
  }

  /** Messages stored elsewhere (a group's log): counted now, the rows of windows that open written in a commit of their own. */
  note(items: Landed[], skip?: (device: string) => boolean): void {
    const devices = this.targets(items, skip);
    if (devices.length > 0) this.apply({ items, devices, opened: new Set(), due: this.ports.clock.now() + this.deps.settings.coalesceMs });
  }

  /** Registered devices that are offline (and not skipped); empty at once when every device is online. */
  private targets(items: Landed[], skip?: (device: string) => boolean): string[] {
    if (items.length === 0) return [];
    this.load();
    const online = this.ports.online();
    if (online.size >= this.ports.deviceCount()) return [];
    return this.ports.devices().filter((d) => !online.has(d) && !(skip?.(d) ?? false));
  }

  /** The shard's wake-up: sends every push that is due. Returns at once; the calls run in the background. */
  tick(): void {
    this.load();
    const now = this.ports.clock.now();
    let online: Set<string> | null = null;
    let next = Infinity;
    const gone: string[] = [];
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
        gone.push(device);
        continue;
      }
      p.flying = true;
      const call = this.call(device, p);
      this.deps.background?.(call);
    }
    if (gone.length > 0) this.drop(gone);
    // The wake that ran this was spent (the platform keeps one, the earliest): ask again for what is still waiting.
    if (next !== Infinity) this.ports.scheduler.wakeAt(next);
  }

  /** Pushes waiting or in flight (for tests and stats). */
  get size(): number {
    return this.pending.size;
  }

  private async call(device: string, p: Pending): Promise<void> {
    const s = this.deps.settings;
    const payload: PushPayload = { user: this.ports.user, device, sender: p.latest.sender, conversation: p.latest.conversation, msg: p.latest.msg, count: p.count, ts: p.latest.ts, ...(p.latest.group && { group: true as const }) };
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
    // The row follows: rewritten for a retry or a window the extra messages opened, deleted when nothing waits.
    if (this.pending.has(device)) this.save([device]);
    else this.drop([device]);
  }

  /** One row per device, in the caller's commit (plan) or (outside one) through write's callers save / drop. */
  private write(device: string, p: Pick<Pending, 'latest' | 'count' | 'due' | 'attempts'>, ifNone = false): void {
    const l = p.latest;
    this.ports.sql.all(
      `INSERT INTO push_pending (user, device, sender, conv, msg, ts, count, due, attempts, grp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (user, device) DO ${ifNone ? 'NOTHING' : 'UPDATE SET sender = excluded.sender, conv = excluded.conv, msg = excluded.msg, ts = excluded.ts, count = excluded.count, due = excluded.due, attempts = excluded.attempts, grp = excluded.grp'}`,
      this.ports.user, device, l.sender, l.conversation, l.msg, l.ts, p.count, p.due, p.attempts, l.group ? 1 : 0,
    );
  }

  /** The rows of these devices as memory has them now, in a commit of their own (off the message path). */
  private save(devices: string[]): void {
    this.commit(() => {
      for (const d of devices) {
        const p = this.pending.get(d);
        // What a restart must send: the messages counted, those riding on the call in flight included.
        if (p) this.write(d, { latest: p.extraLatest ?? p.latest, count: p.count + p.extra, due: p.due, attempts: p.attempts });
      }
    });
  }

  private drop(devices: string[]): void {
    this.commit(() => {
      // A window opened again since (a message after the call): its row stays.
      for (const d of devices) if (!this.pending.has(d)) this.ports.sql.all(`DELETE FROM push_pending WHERE user = ? AND device = ?`, this.ports.user, d);
    });
  }

  private commit(fn: () => void): void {
    // Never awaited: a row that failed to be written costs at most a push lost or sent twice after a restart.
    this.ports.tx(fn).catch((e: unknown) => this.ports.log.log('warn', `${this.ports.user}: push_pending not written`, e));
  }
}

function countOf(items: Landed[]): number {
  let n = 0;
  for (const i of items) n += i.count ?? 1;
  return n;
}
