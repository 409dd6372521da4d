import { settingSpec } from '../../core/settings.js';

/** `npm start` (wrangler dev) listens here; package.json's start script passes it. */
export const WRANGLER_PORT = 8787;
/** The on-prem server's default port, from its declaration (core/settings.ts), so the two cannot disagree. */
export const ONPREM_PORT = Number(settingSpec('IRIS_PORT')?.default);

/**
 * The URL the CLIs connect to: --url as given; else ws://127.0.0.1:<port>/v1/connect with --port, or the
 * on-prem default with --onprem, or wrangler dev's. Throws when --url is combined with the others, or for a
 * port that is not one.
 */
export function connectUrl(o: { url?: string | undefined; port?: string | undefined; onprem?: boolean | undefined }): string {
  if (o.url !== undefined) {
    if (o.port !== undefined || o.onprem) throw new Error('--url names the port itself: drop --port / --onprem');
    return o.url;
  }
  if (o.port !== undefined && o.onprem) throw new Error('--port and --onprem both name a port: give one');
  const port = o.port !== undefined ? Number(o.port) : o.onprem ? ONPREM_PORT : WRANGLER_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--port must be an integer from 1 to 65535, got "${o.port}"`);
  return `ws://127.0.0.1:${port}/v1/connect`;
}
