import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { refusalBody, refusalHeaders, type Refusal } from '../auth/index.js';

/** HTTP answers of the listener: the same refusals (auth/upgrade.ts) as the edge, on Node sockets. */

export type { Refusal };

/** Answers an upgrade request on its raw socket (no WebSocket was created) and closes it. */
export function refuseSocket(socket: Duplex, r: Refusal): void {
  if (socket.destroyed) return;
  const body = refusalBody(r);
  const h = { ...refusalHeaders(r), 'content-length': String(Buffer.byteLength(body)), connection: 'close' };
  let head = `HTTP/1.1 ${r.status} ${STATUS_CODES[r.status] ?? 'Error'}\r\n`;
  for (const [k, v] of Object.entries(h)) head += `${k}: ${v}\r\n`;
  socket.end(head + '\r\n' + body);
  // Do not wait for a slow reader: the answer is small and final.
  setTimeout(() => socket.destroy(), 1000).unref();
}

export function respond(res: ServerResponse, r: Refusal): void {
  res.writeHead(r.status, refusalHeaders(r));
  res.end(refusalBody(r));
}

export function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

/**
 * Per-IP connection attempts, checked before the token (like the edge's CONNECT_LIMITER). The kernel spreads
 * one address's connections over every worker, so each worker allows its share of the per-minute budget
 * (a token bucket: the share as burst, refilled over a minute). Memory is bounded: buckets untouched for a
 * minute are full again and are forgotten; past maxKeys addresses the table starts over.
 */
export class ConnectLimiter {
  private readonly buckets = new Map<string, { tokens: number; last: number }>();
  private readonly perMs: number;
  private readonly burst: number;
  private lastSweep = 0;

  constructor(perMinute: number, workers: number, private readonly maxKeys = 100_000) {
    this.burst = Math.max(1, Math.ceil(perMinute / workers));
    this.perMs = this.burst / 60_000;
  }

  /** 0 if allowed, else whole seconds to wait. */
  take(ip: string, now: number): number {
    if (now - this.lastSweep > 60_000 || this.buckets.size >= this.maxKeys) {
      this.lastSweep = now;
      if (this.buckets.size >= this.maxKeys) this.buckets.clear();
      else for (const [k, b] of this.buckets) if (now - b.last >= 60_000) this.buckets.delete(k);
    }
    let b = this.buckets.get(ip);
    if (!b) {
      b = { tokens: this.burst, last: now };
      this.buckets.set(ip, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + (now - b.last) * this.perMs);
    b.last = now;
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.perMs / 1000));
  }
}
