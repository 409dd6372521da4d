import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * Iris states one Node requirement (package.json `engines`), and every place that names a minimum says the same:
 * the docs, the SDK's README, the server command and the launcher that enforces it.
 */
const root = join(fileURLToPath(import.meta.url), '../../..');
const read = (p: string): string => readFileSync(join(root, p), 'utf8');

const engines = (JSON.parse(read('package.json')) as { engines: { node: string } }).engines.node;
const required = /^>=(\d+\.\d+)$/.exec(engines)?.[1];

describe('one Node requirement', () => {
  it('package.json states it as >= major.minor', () => {
    expect(required).toMatch(/^\d+\.\d+$/);
  });

  it.each(['README.md', 'client/README.md', 'docs/ARCHITECTURE.md', 'docs/ARCHITECTURE.onprem.md', 'docs/OPERATIONS.md', 'bin/iris-onprem', 'scripts/node.sh'])(
    '%s names no other minimum',
    (file) => {
      const stated = [...read(file).matchAll(/Node(?:\.js)? (?:\()?>= ?(\d+(?:\.\d+)?)/g)].map((m) => m[1]);
      expect(stated.length).toBeGreaterThan(0);
      expect(new Set(stated)).toEqual(new Set([required]));
    },
  );

  it('the launcher enforces exactly that minimum', () => {
    const [major, minor] = required!.split('.');
    expect(read('scripts/node.sh')).toContain(`a>${major}||(a===${major}&&b>=${minor})`);
  });
});
