import { logs, type Logger, type LogLevel } from '../core/ports.js';

/**
 * The core's Logger on Cloudflare: the console, which Workers Logs and `wrangler tail` collect, filtered by
 * IRIS_LOG (validated at the edge, core/settings.ts). The error goes as its own argument so its cause chain and
 * stack stay structured in Workers Logs.
 */
export function consoleLogger(least: LogLevel): Logger {
  return {
    log(level: LogLevel, message: string, error?: unknown): void {
      if (!logs(least, level)) return;
      const line = `iris: ${message}`;
      const args = error === undefined ? [line] : [line, error];
      if (level === 'error') console.error(...args);
      else if (level === 'warn') console.warn(...args);
      else console.log(...args);
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
