import type { LogFields, LogLevel } from './ports.js';

/**
 * One log entry as one JSON object on one line, the same shape on both profiles (docs/OPERATIONS.md "Logs"):
 *   { ts, level, msg, profile, worker?, user?, shard?, trace?, error? }
 * ts: ISO 8601 UTC; profile: "onprem" or "cloudflare"; worker: the on-prem worker process; user: whose shard
 * wrote it; shard: the shard's kind when not a user's ("group:<id>"), trace: the trace id of the connection or
 * forward the line is about; error: the error described on one line (Name: message (code) <- cause: ...).
 * JSON.stringify escapes newlines, so an entry can never span lines, whatever a message holds.
 */
export interface LogEntry extends LogFields {
  ts: string;
  level: LogLevel;
  msg: string;
  profile: 'onprem' | 'cloudflare';
  worker?: number;
  error?: string;
}

/** `Name: message (code) <- cause: ...`, bounded depth; no stacks (one line, and no paths of the build). */
export function describeErr(e: unknown, depth = 0): string {
  if (!(e instanceof Error)) return typeof e === 'string' ? e : safeJson(e);
  const code = (e as { code?: unknown }).code;
  let out = `${e.name}: ${e.message}${typeof code === 'string' || typeof code === 'number' ? ` (${code})` : ''}`;
  if (e.cause !== undefined && depth < 5) out += ` <- cause: ${describeErr(e.cause, depth + 1)}`;
  return out;
}

function safeJson(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

/** The line for an entry: fields in a fixed order, absent ones left out. */
export function logLine(
  base: { profile: LogEntry['profile']; worker?: number; user?: string; shard?: string },
  level: LogLevel,
  msg: string,
  error?: unknown,
  fields?: LogFields,
  now: number = Date.now(),
): string {
  const e: LogEntry = { ts: new Date(now).toISOString(), level, msg, profile: base.profile };
  if (base.worker !== undefined) e.worker = base.worker;
  const user = fields?.user ?? base.user;
  if (user !== undefined) e.user = user;
  const shard = fields?.shard ?? base.shard;
  if (shard !== undefined) e.shard = shard;
  if (fields?.trace !== undefined) e.trace = fields.trace;
  if (error !== undefined) e.error = describeErr(error);
  return JSON.stringify(e);
}

/**
 * A trace id for a connection: the trace-id of a W3C `traceparent` header when the client (or a proxy) sent a
 * valid one, so the lines join the caller's trace; otherwise 16 random bytes in hex, the same format.
 */
export function traceId(traceparent: string | null | undefined): string {
  const m = traceparent ? /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/.exec(traceparent.trim()) : null;
  if (m && !/^0+$/.test(m[1]!)) return m[1]!;
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
