import type { GroupCall, GroupNews, GroupPush, GroupResult } from '../core/group/types.js';
import type { GroupPushNote } from '../core/group/push-notes.js';

/**
 * Group calls between workers (core/ports.ts Peers.group, groupPush, groupNews) travel over the links as one op
 * (links.ts `group`, 10) whose payload is this JSON, bytes fields as {"$b": base64}. A push is one message per
 * worker, listing that worker's members (ARCHITECTURE.md "Groups": one IPC message per worker, not per member).
 */
export type GroupLinkMessage =
  | { k: 'call'; group: string; call: GroupCall }
  | { k: 'push'; push: GroupPush }
  | { k: 'news'; user: string; news: GroupNews }
  /** Push webhooks for an offline member (core/group/push-notes.ts). */
  | { k: 'note'; user: string; note: GroupPushNote };

export type GroupLinkAnswer = GroupResult | boolean[] | null;

export function toWire(x: unknown): string {
  // The raw value from the holder: a Buffer (bodies decoded from a socket's bytes) has toJSON, which would hand
  // the replacer {type, data} instead of the bytes.
  return JSON.stringify(x, function (this: Record<string, unknown>, k: string, v: unknown) {
    const raw = this[k];
    return raw instanceof Uint8Array ? { $b: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') } : v;
  });
}

export function fromWire<T>(s: string): T {
  return JSON.parse(s, (_k, v: unknown) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o['$b'] === 'string' && Object.keys(o).length === 1) return new Uint8Array(Buffer.from(o['$b'], 'base64'));
    }
    return v;
  }) as T;
}
