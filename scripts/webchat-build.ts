/**
 * Bundles the web chat (webchat/app.ts and the SDK it imports) for browsers into public/chat.js, next to the
 * committed index.html and chat.css. Run by `npm start` and `npm run onprem` before the server starts, and by
 * `npm run build` (scripts/build.ts); it takes well under a second. The output is not committed: it would go
 * stale with every SDK change. Written to a temporary file and renamed, so a server reading it never sees half.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildSync } from 'esbuild';
import { isMain } from './lib/main.js';

const ROOT = resolve(import.meta.dirname, '..');
export const WEBCHAT_JS = join(ROOT, 'public', 'chat.js');

export function buildWebchat(): number {
  const out = buildSync({
    entryPoints: [join(ROOT, 'webchat', 'app.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent',
  });
  const js = out.outputFiles[0]!.contents;
  const tmp = `${WEBCHAT_JS}.${process.pid}.tmp`;
  writeFileSync(tmp, js);
  renameSync(tmp, WEBCHAT_JS);
  return js.length;
}

if (isMain(import.meta.url)) {
  const n = buildWebchat();
  process.stderr.write(`web chat: public/chat.js (${Math.round(n / 1024)} KiB)\n`);
}
