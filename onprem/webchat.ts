/**
 * The on-prem server's web chat (README "Web chat"): the static files of public/ at `/`, and the development
 * token endpoint (auth/dev-token.ts). The files are small and few, so they are read once and kept in memory.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { dirname, join } from 'node:path';
import { DEV_TOKEN_PATH, devToken, isLoopback } from '../auth/dev-token.js';

const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };
const FILES = ['index.html', 'chat.js', 'chat.css', 'sw.js'];

/** public/ of the package: this file runs from onprem/ (tsx) or dist/onprem/ (built), so it is looked up. */
function publicDir(): string | null {
  let dir = import.meta.dirname;
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'public', 'index.html'))) return join(dir, 'public');
    dir = dirname(dir);
  }
  return null;
}

// A file found is kept for the life of the process; one not found (chat.js before its first build) is looked
// for again on the next request.
const cache = new Map<string, Buffer>();
function file(name: string): Buffer | null {
  const hit = cache.get(name);
  if (hit) return hit;
  const dir = publicDir();
  const p = dir && join(dir, name);
  if (!p || !existsSync(p)) return null;
  const body = readFileSync(p);
  cache.set(name, body);
  return body;
}

/** Answers a web chat request and returns true, or returns false when the path is not one of its own. */
export function serveWebchat(req: IncomingMessage, res: ServerResponse, path: string, devAuth: boolean): boolean {
  if (path === DEV_TOKEN_PATH) {
    const search = new URL(req.url ?? '/', 'http://x').searchParams;
    void devToken(search, devAuth, isLoopback(req.socket.remoteAddress ?? '')).then((a) => {
      res.writeHead(a.status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(a.body));
    });
    return true;
  }
  const name = path === '/' ? 'index.html' : path.slice(1);
  if (!FILES.includes(name) || req.method !== 'GET') return false;
  const body = file(name);
  if (!body) return false;
  res.writeHead(200, { 'content-type': TYPES[name.split('.').pop()!] ?? 'application/octet-stream', 'cache-control': 'no-cache' }).end(body);
  return true;
}
