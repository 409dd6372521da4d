import { inspect } from 'node:util';
import { logLine } from '../core/log-line.js';
import type { LogLevel } from '../core/ports.js';

export type { LogLevel };

/**
 * One log entry = one line (docs/OPERATIONS.md promises it: journald, grep and log shippers count on it).
 * Errors are written as `Name: message`, their cause chain on the same line; stacks are never printed, and
 * any newline left in a message becomes ` | `.
 */

/** `Name: message (code) <- cause: Name: message ...`, one line, bounded. */
export function describeError(e: unknown, depth = 0): string {
  if (!(e instanceof Error)) return oneLine(typeof e === 'string' ? e : inspect(e, { breakLength: Infinity, depth: 2 }));
  const code = (e as { code?: unknown }).code;
  let out = `${e.name}: ${oneLine(e.message)}${typeof code === 'string' || typeof code === 'number' ? ` (${code})` : ''}`;
  if (e.cause !== undefined && depth < 5) out += ` <- cause: ${describeError(e.cause, depth + 1)}`;
  return out;
}

export function oneLine(s: string): string {
  return s.replace(/\s*[\r\n]+\s*/g, ' | ').trim();
}

/**
 * A line of the supervisor: the workers' JSON shape (core/log-line.ts) without `worker`, which is what marks
 * it as the supervisor's, so one parser reads the whole server's stderr.
 */
export function supervisorLogLine(level: LogLevel, msg: string, error?: unknown, now: number = Date.now()): string {
  return logLine({ profile: 'onprem' }, level, oneLine(msg), error, undefined, now);
}

/** console.* arguments as one line, errors described (not stacked). */
export function formatArgs(args: unknown[]): string {
  return oneLine(args.map((a) => (typeof a === 'string' ? a : describeError(a))).join(' '));
}

/**
 * A token bucket over log lines: a condition that repeats for every user or every retry (a full disk, a
 * worker that is down) must not flood the log. Past the burst, lines are counted, and one line says how many
 * were left out once lines are allowed again.
 */
export class LogLimiter {
  private tokens: number;
  private last: number;
  private dropped = 0;

  constructor(
    private readonly burst = 20,
    private readonly perSec = 2,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** null: drop the line. Otherwise the number of lines dropped since the last one allowed (usually 0). */
  take(): number | null {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.perSec);
    this.last = t;
    if (this.tokens < 1) {
      this.dropped++;
      return null;
    }
    this.tokens -= 1;
    const d = this.dropped;
    this.dropped = 0;
    return d;
  }
}
