/**
 * Online backup of an on-prem data directory, while the server runs:
 *
 *   sh scripts/node.sh dist/onprem/backup.js --data-dir ./data/onprem --to /backups/iris-2026-11-21
 *
 * Copies every worker's SQLite file with SQLite's online backup API (a second, read-only connection; the
 * workers keep committing meanwhile; WAL content is included) plus the metadata file, into a new directory
 * that can be used as a data directory as it is. Each file is a consistent snapshot of its own; the files
 * are taken one after the other, so see docs/OPERATIONS.md ("Backups") for what that means for messages in
 * flight between workers, and for the fully consistent alternatives.
 */
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DatabaseSync, backup } from 'node:sqlite';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { 'data-dir': { type: 'string' }, to: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (values.help || !values['data-dir'] || !values.to) {
  process.stderr.write('usage: dist/onprem/backup.js --data-dir <data dir> --to <new directory>\n');
  process.exit(values.help ? 0 : 2);
}
const from = resolve(values['data-dir']);
const to = resolve(values.to);
if (!existsSync(join(from, 'iris-onprem.json'))) {
  process.stderr.write(`backup: ${from} is not an iris-onprem data directory (no iris-onprem.json)\n`);
  process.exit(1);
}
if (existsSync(to) && readdirSync(to).length > 0) {
  process.stderr.write(`backup: ${to} exists and is not empty\n`);
  process.exit(1);
}
mkdirSync(to, { recursive: true });
copyFileSync(join(from, 'iris-onprem.json'), join(to, 'iris-onprem.json'));
const files = readdirSync(from).filter((f) => /^worker-\d+\.sqlite$/.test(f)).sort();
for (const f of files) {
  const t0 = Date.now();
  const src = new DatabaseSync(join(from, f), { readOnly: true });
  try {
    const pages = await backup(src, join(to, f), { rate: 1024 });
    process.stdout.write(`backup: ${f}: ${pages} pages in ${Date.now() - t0} ms\n`);
  } finally {
    src.close();
  }
}
process.stdout.write(`backup: ${files.length} worker file(s) -> ${to}\n`);
