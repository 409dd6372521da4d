/**
 * Writes README.md's settings table from core/settings.ts, the one declaration of every setting:
 *
 *   sh scripts/node.sh --import tsx scripts/settings-doc.ts          # rewrite the table
 *   sh scripts/node.sh --import tsx scripts/settings-doc.ts --check  # exit 1 when README.md is stale
 *
 * test/unit/settings-doc.test.ts runs the same comparison, so a setting changed in the code and not in the
 * README (or the other way round) fails the tests; this script is the fix.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SETTINGS, defaultText, rangeText, type Profile, type SettingSpec } from '../core/settings.js';
import { isMain } from './lib/main.js';

export const README = resolve(import.meta.dirname, '..', 'README.md');
export const MARKER = '<!-- table:settings -->';

function accepts(s: SettingSpec): string {
  if (s.type === 'string') return 'text';
  if (s.type === 'path') return 'a path';
  return rangeText(s);
}

function profiles(s: SettingSpec): string {
  return s.profiles.length === 2 ? 'both' : s.profiles[0] === 'cloudflare' ? 'Cloudflare' : 'on-prem';
}

/** The table, one row per setting a profile reads, in declaration order. */
export function settingsTable(profile: Profile): string {
  const rows = ['| Variable | Default | Accepts | Profiles | Meaning |', '| --- | --- | --- | --- | --- |'];
  for (const s of SETTINGS.filter((x) => x.profiles.includes(profile))) {
    const def = s.default !== null ? `\`${s.default}\`` : defaultText(s);
    rows.push(`| \`${s.name}\` | ${def} | ${accepts(s)} | ${profiles(s)} | ${s.doc} |`);
  }
  return rows.join('\n');
}

/** The README with its settings table replaced by the generated one. Throws when the marker is missing. */
export function withTable(md: string): string {
  const lines = md.split('\n');
  const at = lines.findIndex((l) => l.trim() === MARKER);
  if (at < 0) throw new Error(`README.md has no ${MARKER} line`);
  let end = at + 1;
  while (end < lines.length && lines[end]!.trim().startsWith('|')) end++;
  return [...lines.slice(0, at + 1), settingsTable('cloudflare'), ...lines.slice(end)].join('\n');
}

if (isMain(import.meta.url)) {
  const md = readFileSync(README, 'utf8');
  const next = withTable(md);
  if (process.argv.includes('--check')) {
    if (next !== md) {
      process.stderr.write(`${join('README.md')}: the settings table is stale; run scripts/settings-doc.ts\n`);
      process.exit(1);
    }
  } else if (next !== md) {
    writeFileSync(README, next);
    process.stdout.write('README.md: settings table rewritten\n');
  }
}
