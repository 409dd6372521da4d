import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Smaller rooms (issue 9): a product file over ~400 lines says at its top why it is not split. The reason is a
 * comment starting "Over 400 lines on purpose" in its first 15 lines; the bound is 420 to leave room for a
 * few lines of growth before a file must be looked at again.
 */
const ROOT = join(fileURLToPath(import.meta.url), '../../..');
const PRODUCT = ['protocol', 'core', 'auth', 'client', 'onprem', 'gateway', 'workers', 'durable-objects', 'cluster'];
const BOUND = 420;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return tsFiles(p);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [p] : [];
  });
}

describe('product files stay small, or say why not', () => {
  const files = PRODUCT.flatMap((d) => tsFiles(join(ROOT, d)));

  it('finds the product files', () => {
    expect(files.length).toBeGreaterThan(30);
  });

  it(`every file over ${BOUND} lines gives its reason at the top`, () => {
    const unexplained = files
      .map((f) => ({ file: relative(ROOT, f), text: readFileSync(f, 'utf8') }))
      .filter(({ text }) => text.split('\n').length > BOUND && !text.split('\n').slice(0, 15).some((l) => l.includes('Over 400 lines on purpose')))
      .map(({ file, text }) => `${file} (${text.split('\n').length} lines)`);
    expect(unexplained).toEqual([]);
  });
});
