import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

/**
 * How tools and tests start the on-prem server: the built JavaScript (dist/, `npm run build`), as production
 * runs it. `source` runs onprem/main.ts through tsx instead (a dev dependency): only for comparing the two
 * (docs/BENCHMARKS.md "Built JavaScript against tsx"). The tsx loader is given by absolute path so that the
 * workers, which inherit the supervisor's flags, find it whatever their working directory.
 */

export const ROOT = resolve(import.meta.dirname, '../..');
export const SERVER_MAIN = join(ROOT, 'dist/onprem/main.js');

export type ServerFrom = 'dist' | 'source';

export function parseServerFrom(v: string | undefined): ServerFrom {
  if (v === undefined || v === 'dist') return 'dist';
  if (v === 'source') return 'source';
  throw new Error(`--server ${v}: expected dist or source`);
}

/** Node arguments that start the server (its own options follow). */
export function serverNodeArgs(from: ServerFrom = 'dist'): string[] {
  if (from === 'source') {
    const tsx = createRequire(join(ROOT, 'package.json')).resolve('tsx');
    return ['--import', tsx, join(ROOT, 'onprem/main.ts')];
  }
  if (!existsSync(SERVER_MAIN)) throw new Error(`${SERVER_MAIN} is missing: run \`npm run build\` first`);
  return [SERVER_MAIN];
}
