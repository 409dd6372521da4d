import { logLine } from '../core/log-line.js';
import { logs, type LogFields, type Logger, type LogLevel } from '../core/ports.js';

/** The trace id of an upgrade (core/log-line.ts traceId), set by the edge Worker over whatever the client sent. */
export const TRACE_HEADER = 'X-Iris-Trace';

/**
 * The core's Logger on Cloudflare: one JSON object per console call, the shape on-prem writes too
 * (core/log-line.ts, docs/OPERATIONS.md "Logs"); Workers Logs indexes a JSON line's fields, `wrangler tail`
 * shows it. Filtered by IRIS_LOG (validated at the edge, core/settings.ts). `context` says whose object writes
 * (the user of a UserShard, `group:<id>` of a GroupShard), read per line since it is known only after the
 * first call reached the object.
 */
export function consoleLogger(least: LogLevel, context: () => LogFields = () => ({})): Logger {
  return {
    log(level: LogLevel, message: string, error?: unknown, fields?: LogFields): void {
      if (!logs(least, level)) return;
      const line = logLine({ profile: 'cloudflare', ...context() }, level, message, error, fields);
      if (level === 'error') console.error(line);
      else if (level === 'warn') console.warn(line);
      else console.log(line);
    },
  };
}

/**
 * A Durable Object error that says the object is overloaded. The platform's guidance: do not retry soon
 * (https://developers.cloudflare.com/durable-objects/best-practices/error-handling/).
 */
export function isOverloaded(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { overloaded?: unknown }).overloaded === true;
}
