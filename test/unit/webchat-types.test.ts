import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The web chat (webchat/) is browser code: the root tsconfig (no DOM types) leaves it out, and esbuild bundles
 * it without type-checking. Its own tsconfig checks it against the SDK here, so an SDK change that breaks the
 * page fails a test rather than the page.
 */
const ROOT = resolve(import.meta.dirname, '../..');

describe('webchat types', () => {
  it('type-checks with webchat/tsconfig.json', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '-p', join(ROOT, 'webchat')], { encoding: 'utf8' });
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(r.status).toBe(0);
  }, 60_000);
});
