import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_ENV_NAMES, DEFAULT_CONFIG, configFromEnv } from '../../core/config.js';
import { INTERNAL_VARIABLES, SETTINGS, defaultText, flagName, settingsFor, validateSettings, type Profile } from '../../core/settings.js';
import { helpText, knownNames } from '../../onprem/config.js';
import { MARKER, settingsTable, withTable } from '../../scripts/settings-doc.js';
import { code, parseTable } from './doc-tables.js';

/**
 * core/settings.ts declares every setting once; this holds everything that repeats it against it: README.md's
 * table (generated: scripts/settings-doc.ts rewrites it), docs/OPERATIONS.md's tables (hand-written prose,
 * checked for names, coverage and defaults), on-prem --help and the names the servers read. A setting added,
 * renamed or re-defaulted in one place and not the other fails here, in either direction.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');
const OPERATIONS = readFileSync(join(ROOT, 'docs/OPERATIONS.md'), 'utf8');
const OPERATIONS_TABLES = ['settings-server', 'settings-auth', 'settings-engine'];

const names = (p: Profile) => settingsFor(p).map((s) => s.name);

/** Problems with OPERATIONS.md: every on-prem setting in exactly one table, with its declared default. */
function checkOperations(md: string): string[] {
  const p: string[] = [];
  const seen = new Map<string, string>();
  for (const t of OPERATIONS_TABLES) {
    const rows = parseTable(md, t);
    if (rows === null) {
      p.push(`OPERATIONS.md has no <!-- table:${t} -->`);
      continue;
    }
    const header = rows[0]!.map((c) => c.toLowerCase());
    const defCol = header.indexOf('default');
    if (header[0] !== 'name' || defCol < 0) p.push(`${t}: expected columns "name", "default", got ${rows[0]!.join(' | ')}`);
    for (const row of rows.slice(1)) {
      const name = code(row[0]);
      if (name === null || row[0]!.replace(/`[^`]*`/, '').trim() !== '') {
        p.push(`${t}: one setting per row, as a code span: "${row[0]}"`);
        continue;
      }
      const spec = SETTINGS.find((s) => s.name === name);
      if (spec === undefined || !spec.profiles.includes('onprem')) {
        p.push(`${t}: ${name} is not an on-prem setting in core/settings.ts`);
        continue;
      }
      if (seen.has(name)) p.push(`${t}: ${name} is also in ${seen.get(name)!}`);
      seen.set(name, t);
      const doc = (row[defCol] ?? '').replace(/`/g, '');
      if (doc !== defaultText(spec)) p.push(`${t}: ${name} default is "${defaultText(spec)}" in the code, "${doc}" in the doc`);
    }
  }
  for (const n of names('onprem')) if (!seen.has(n)) p.push(`OPERATIONS.md: ${n} is in no settings table`);
  return p;
}

/** Every IRIS_* literal in the server sources (not benchmarks, not tests). */
function namesInSources(): Map<string, string> {
  const out = new Map<string, string>();
  for (const d of ['core', 'auth', 'onprem', 'workers', 'durable-objects', 'protocol']) {
    for (const f of readdirSync(join(ROOT, d), { recursive: true, encoding: 'utf8' })) {
      if (!f.endsWith('.ts') || f.startsWith('bench')) continue;
      for (const m of readFileSync(join(ROOT, d, f), 'utf8').matchAll(/\bIRIS_[A-Z0-9]+(?:_[A-Z0-9]+)*\b/g)) out.set(m[0], `${d}/${f}`);
    }
  }
  return out;
}

describe('settings: one declaration (core/settings.ts)', () => {
  it('declares each name once, with a sentence, and defaults its own checks accept', () => {
    const all = SETTINGS.map((s) => s.name);
    expect(new Set(all).size).toBe(all.length);
    for (const s of SETTINGS) {
      expect(s.name, s.name).toMatch(/^IRIS_[A-Z0-9_]+$/);
      expect(s.doc.length, s.name).toBeGreaterThan(10);
      expect(s.profiles.length, s.name).toBeGreaterThan(0);
      if (s.type === 'enum') expect(s.values, s.name).toContain(s.default);
    }
    for (const p of ['cloudflare', 'onprem'] as const) {
      const defaults = Object.fromEntries(settingsFor(p).flatMap((s) => (s.default === null ? [] : [[s.name, s.default]])));
      expect(() => validateSettings(defaults, p), p).not.toThrow();
    }
  });

  it('core/config.ts takes its names and defaults from it', () => {
    expect(configFromEnv({})).toEqual(DEFAULT_CONFIG);
    for (const [key, name] of Object.entries(CONFIG_ENV_NAMES)) {
      const spec = SETTINGS.find((s) => s.name === name)!;
      expect([spec.group, spec.profiles], name).toEqual(['engine', ['cloudflare', 'onprem']]);
      expect(DEFAULT_CONFIG[key as keyof typeof DEFAULT_CONFIG], name).toBe(Number(spec.default));
    }
    expect(SETTINGS.filter((s) => s.group === 'engine').map((s) => s.name).sort()).toEqual(Object.values(CONFIG_ENV_NAMES).sort());
  });

  it('every IRIS_* name the servers read is declared (or is a listed internal variable)', () => {
    const declared = new Set([...SETTINGS.map((s) => s.name), ...Object.keys(INTERNAL_VARIABLES)]);
    const undeclared = [...namesInSources()].filter(([n]) => !declared.has(n)).map(([n, f]) => `${n} (${f})`);
    expect(undeclared).toEqual([]);
    for (const n of Object.keys(INTERNAL_VARIABLES)) expect(namesInSources().has(n), `${n} is listed as internal but nothing reads it`).toBe(true);
  });

  it('on-prem takes exactly its settings as flags, and --help shows each with its sentence and default', () => {
    expect([...knownNames()].sort()).toEqual(names('onprem').sort());
    const help = helpText();
    for (const s of settingsFor('onprem')) {
      const at = help.indexOf(`  ${flagName(s.name)}\n`);
      expect(at, s.name).toBeGreaterThanOrEqual(0);
      const block = help.slice(at, help.indexOf('\n  --', at + 1) >>> 0 || undefined);
      expect(block, s.name).toContain(s.doc.replace(/`/g, ''));
      expect(block, s.name).toContain(`default: ${s.default ?? s.defaultDoc ?? 'none'})`);
    }
    for (const s of SETTINGS.filter((x) => !x.profiles.includes('onprem'))) expect(help, s.name).not.toContain(flagName(s.name));
  });

  it('README.md: the settings table is the one scripts/settings-doc.ts generates', () => {
    expect(README).toContain(MARKER);
    // On failure: sh scripts/node.sh --import tsx scripts/settings-doc.ts
    expect(withTable(README)).toBe(README);
    const rows = (parseTable(README, 'settings') ?? []).slice(1).map((r) => code(r[0]));
    expect(rows).toEqual(names('cloudflare'));
  });

  it('docs/OPERATIONS.md: every on-prem setting in one table, with its declared default', () => {
    expect(checkOperations(OPERATIONS)).toEqual([]);
  });

  it('wrangler.toml [vars] hold values the Cloudflare profile accepts', () => {
    const toml = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
    const vars = toml.slice(toml.indexOf('[vars]'));
    const env = Object.fromEntries([...vars.matchAll(/^(IRIS_[A-Z0-9_]+)\s*=\s*"([^"]*)"/gm)].map((m) => [m[1]!, m[2]!]));
    expect(Object.keys(env).length).toBeGreaterThan(0);
    for (const n of Object.keys(env)) expect(names('cloudflare'), n).toContain(n);
    expect(() => validateSettings(env, 'cloudflare')).not.toThrow();
  });
});

describe('the settings doc checks catch drift', () => {
  const mutate = (md: string, find: string, replace: string): string => {
    expect(md).toContain(find);
    return md.replace(find, replace);
  };

  it('a changed default, a missing, a doubled or an unknown row in OPERATIONS.md', () => {
    expect(checkOperations(mutate(OPERATIONS, '| `IRIS_COMMIT_MAX_BATCH` | `1024` |', '| `IRIS_COMMIT_MAX_BATCH` | `2048` |')).join('\n')).toMatch(/IRIS_COMMIT_MAX_BATCH default is "1024" in the code, "2048"/);
    const noLog = OPERATIONS.split('\n').filter((l) => !l.startsWith('| `IRIS_LOG`')).join('\n');
    expect(checkOperations(noLog)).toEqual(['OPERATIONS.md: IRIS_LOG is in no settings table']);
    const line = OPERATIONS.split('\n').find((l) => l.startsWith('| `IRIS_INBOX_CAP`'))!;
    expect(checkOperations(mutate(OPERATIONS, line, `${line}\n${line}`)).join('\n')).toMatch(/IRIS_INBOX_CAP is also in settings-engine/);
    expect(checkOperations(mutate(OPERATIONS, line, `${line}\n| \`IRIS_TRUST_CF_CONNECTING_IP\` | \`auto\` | x |`)).join('\n')).toMatch(/IRIS_TRUST_CF_CONNECTING_IP is not an on-prem setting/);
  });

  it('a hand edit of the README table', () => {
    const edited = mutate(README, '| `IRIS_INBOX_CAP` | `10000` |', '| `IRIS_INBOX_CAP` | `5000` |');
    expect(withTable(edited)).not.toBe(edited);
    expect(withTable(edited)).toBe(README);
    expect(settingsTable('cloudflare')).toContain('| `IRIS_INBOX_CAP` | `10000` |');
  });
});
