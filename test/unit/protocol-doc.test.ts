import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CONFIG_ENV_NAMES, DEFAULT_CONFIG } from '../../core/config.js';
import { code, parseTable } from './doc-tables.js';
import {
  CLIENT_ID_PATTERN,
  CLOSE_CODES,
  ENTRY_KINDS,
  ERROR_CODES,
  FRAME_TYPES,
  ID_PATTERN,
  LIMITS,
  PING_TEXT,
  PONG_TEXT,
  ProtocolError,
  SUBPROTOCOL,
  TOKEN_SUBPROTOCOL_PREFIX,
  decodeBinary,
  decodeFrame,
  decodeJson,
  encodeBinary,
  encodeJson,
  isClientFrame,
  type Frame,
  type FrameType,
} from '../../protocol/index.js';

/**
 * docs/PROTOCOL.md and the codec must agree. This walks the document's examples (convention in its section
 * 12.1) and its tables (each introduced by an `<!-- table:NAME -->` marker) and compares them with the code,
 * in both directions. Every check returns a list of problems instead of throwing at the first one, so a
 * failure names every place the doc and the code disagree; the last block proves the checks can fail.
 */

const DOC = readFileSync(resolve(dirname(fileURLToPath(import.meta.url)), '../../docs/PROTOCOL.md'), 'utf8');

// ------------------------------------------------------------------ markdown parsing

interface Block {
  /** Info string after the opening fence, e.g. "json example". */
  info: string;
  body: string;
  /** 1-based line of the opening fence. */
  line: number;
  /** Text of the nearest heading above the block. */
  heading: string;
  /** Which heading that is (0 before the first): blocks with the same section belong to the same example. */
  section: number;
}

function parseBlocks(md: string): Block[] {
  const lines = md.split('\n');
  const blocks: Block[] = [];
  let heading = '';
  let section = 0;
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i]!;
    const h = /^#{1,6}\s+(.*)$/.exec(l);
    if (h) {
      heading = h[1]!.trim();
      section++;
      continue;
    }
    const open = /^```(.*)$/.exec(l);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!);
    if (i >= lines.length) throw new Error(`PROTOCOL.md:${start + 1}: unterminated fenced block`);
    blocks.push({ info: open[1]!.trim(), body: body.join('\n'), line: start + 1, heading, section });
  }
  return blocks;
}

function parseHex(body: string): Uint8Array {
  const digits = body
    .split('\n')
    .map((l) => l.replace(/#.*$/, ''))
    .join(' ')
    .trim();
  if (digits === '') return new Uint8Array(0);
  const pairs = digits.split(/\s+/);
  for (const p of pairs) if (!/^[0-9a-f]{2}$/.test(p)) throw new Error(`not a hex byte: "${p}"`);
  return Uint8Array.from(pairs.map((p) => parseInt(p, 16)));
}

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');

/** Structural equality for frames: Uint8Array by content, numbers by ===, same own keys. */
function same(a: unknown, b: unknown): boolean {
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i]);
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => same(x, b[i]));
  }
  if (typeof a === 'object' && a !== null && typeof b === 'object' && b !== null) {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return (
      same(ka, kb) && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
    );
  }
  return a === b;
}

const show = (f: unknown): string =>
  JSON.stringify(f, (_k, v: unknown) => (v instanceof Uint8Array ? `<bytes ${hex(v)}>` : v));

// ------------------------------------------------------------------ example checks

const ROLES = ['json example', 'hex example', 'text malformed', 'hex malformed', 'json reply'] as const;
type Role = (typeof ROLES)[number];
const isRole = (s: string): s is Role => (ROLES as readonly string[]).includes(s);

interface ExampleResult {
  problems: string[];
  /** Valid frames found, with where they came from. */
  frames: { where: string; frame: Frame }[];
  malformed: number;
}

function checkExamples(md: string): ExampleResult {
  const problems: string[] = [];
  const frames: { where: string; frame: Frame }[] = [];
  let malformed = 0;
  const groups = new Map<number, Block[]>();
  for (const b of parseBlocks(md)) {
    if (!isRole(b.info)) {
      // Catch typos such as "hex exmaple" or "json  example" that would silently drop an example.
      if (/example|malformed|reply/i.test(b.info)) problems.push(`line ${b.line}: unknown example tag "${b.info}"`);
      continue;
    }
    const group = groups.get(b.section);
    if (group) group.push(b);
    else groups.set(b.section, [b]);
  }
  for (const blocks of groups.values()) {
    const where = `"${blocks[0]!.heading}" (line ${blocks[0]!.line})`;
    const roles = blocks.map((b) => b.info).join(' + ');
    if (roles === 'json example + hex example') {
      const [jb, hb] = blocks as [Block, Block];
      let fj: Frame;
      let fh: Frame;
      let bytes: Uint8Array;
      try {
        fj = decodeJson(jb.body);
      } catch (e) {
        problems.push(`${where}: JSON does not decode: ${String(e)}`);
        continue;
      }
      try {
        bytes = parseHex(hb.body);
        fh = decodeBinary(bytes);
      } catch (e) {
        problems.push(`${where}: hex does not decode: ${String(e)}`);
        continue;
      }
      if (!same(fj, fh)) problems.push(`${where}: JSON and hex decode to different frames:\n  json ${show(fj)}\n  hex  ${show(fh)}`);
      const reBin = encodeBinary(fh);
      if (hex(reBin) !== hex(bytes)) problems.push(`${where}: encodeBinary gives\n  ${hex(reBin)}\nbut the doc says\n  ${hex(bytes)}`);
      const canonical = JSON.stringify(JSON.parse(jb.body) as unknown);
      const reJson = encodeJson(fj);
      if (reJson !== canonical) problems.push(`${where}: encodeJson gives\n  ${reJson}\nbut the doc says\n  ${canonical}`);
      if (!same(decodeJson(reJson), fj)) problems.push(`${where}: JSON does not round-trip`);
      if (!same(decodeBinary(encodeBinary(fj)), fj)) problems.push(`${where}: binary does not round-trip`);
      if (!same(decodeFrame(jb.body), fj) || !same(decodeFrame(bytes), fh)) problems.push(`${where}: decodeFrame disagrees`);
      frames.push({ where, frame: fj });
    } else if (roles === 'hex malformed + json reply' || roles === 'text malformed + json reply') {
      malformed++;
      const [ib, rb] = blocks as [Block, Block];
      let reply: Frame;
      try {
        reply = decodeJson(rb.body);
      } catch (e) {
        problems.push(`${where}: reply does not decode: ${String(e)}`);
        continue;
      }
      if (reply.t !== 'error') {
        problems.push(`${where}: reply is a ${reply.t} frame, expected error`);
        continue;
      }
      let input: Uint8Array | string;
      try {
        input = ib.info === 'hex malformed' ? parseHex(ib.body) : ib.body;
      } catch (e) {
        problems.push(`${where}: bad hex: ${String(e)}`);
        continue;
      }
      try {
        const f = typeof input === 'string' ? decodeJson(input) : decodeBinary(input);
        problems.push(`${where}: input decodes to ${show(f)} instead of failing`);
      } catch (e) {
        if (!(e instanceof ProtocolError)) {
          problems.push(`${where}: decoder threw ${String(e)}, not a ProtocolError`);
          continue;
        }
        const got = { code: e.code, message: e.message, ref: e.ref };
        const want = { code: reply.code, message: reply.message, ref: reply.ref };
        if (!same(got, want)) problems.push(`${where}: decoder answers ${show(got)}, the doc says ${show(want)}`);
      }
    } else {
      problems.push(`${where}: expected "json example + hex example" or "<hex|text> malformed + json reply", found "${roles}"`);
    }
  }
  return { problems, frames, malformed };
}

// ------------------------------------------------------------------ table checks

/** Compares a doc table (name -> number) with a code table, both directions. */
function compareMap(what: string, doc: Map<string, number>, codeMap: Record<string, number>): string[] {
  const problems: string[] = [];
  for (const [k, v] of Object.entries(codeMap)) {
    if (!doc.has(k)) problems.push(`${what}: ${k} = ${v} is in the code but not in the doc`);
    else if (doc.get(k) !== v) problems.push(`${what}: ${k} is ${v} in the code but ${doc.get(k)} in the doc`);
  }
  for (const k of doc.keys()) if (!Object.hasOwn(codeMap, k)) problems.push(`${what}: ${k} is in the doc but not in the code`);
  return problems;
}

/** Reads a table into name -> number, with the name and number taken from the code spans of two columns. */
function tableMap(md: string, table: string, nameCol: number, valueCol: number, problems: string[]): Map<string, number> {
  const rows = parseTable(md, table);
  const out = new Map<string, number>();
  if (rows === null || rows.length < 2) {
    problems.push(`table "${table}" not found`);
    return out;
  }
  for (const row of rows.slice(1)) {
    const name = code(row[nameCol]);
    const raw = code(row[valueCol]);
    if (name === null || raw === null || !/^\d+$/.test(raw)) {
      problems.push(`table "${table}": cannot read row | ${row.join(' | ')} |`);
      continue;
    }
    if (out.has(name)) problems.push(`table "${table}": ${name} appears twice`);
    out.set(name, Number(raw));
  }
  return out;
}

function checkLimits(md: string): string[] {
  const p: string[] = [];
  return [...p, ...compareMap('limits', tableMap(md, 'limits', 0, 1, p), LIMITS)];
}

function checkErrorCodes(md: string): string[] {
  const p: string[] = [];
  const rows = parseTable(md, 'error-codes') ?? [];
  for (const row of rows.slice(1)) {
    if (!/^(yes|no)$/.test(row[2] ?? '')) p.push(`error-codes: retryAfter column of ${row[1]} is "${row[2]}", expected yes or no`);
    if (!/^(stays open|closed \(\d{4}\))$/.test(row[3] ?? '')) p.push(`error-codes: connection column of ${row[1]} is "${row[3]}"`);
  }
  return [...p, ...compareMap('error codes', tableMap(md, 'error-codes', 1, 0, p), ERROR_CODES)];
}

function checkCloseCodes(md: string): string[] {
  const p: string[] = [];
  return [...p, ...compareMap('close codes', tableMap(md, 'close-codes', 1, 0, p), CLOSE_CODES)];
}

function checkFrameTypes(md: string, examples: { frame: Frame }[]): string[] {
  const p: string[] = [];
  const map = tableMap(md, 'frame-types', 1, 0, p);
  p.push(...compareMap('frame types', map, FRAME_TYPES));
  const rows = parseTable(md, 'frame-types') ?? [];
  for (const row of rows.slice(1)) {
    const t = code(row[1]);
    const dir = row[2] ?? '';
    const sample = examples.find((e) => e.frame.t === t)?.frame;
    if (sample === undefined) continue; // reported by the coverage check
    const want = isClientFrame(sample) ? 'client → server' : 'server → client';
    if (dir !== want) p.push(`frame types: ${t} is "${dir}" in the doc, but the code says ${want}`);
  }
  return p;
}

function checkEntryKinds(md: string): string[] {
  const p: string[] = [];
  return [...p, ...compareMap('entry kinds', tableMap(md, 'entry-kinds', 1, 0, p), ENTRY_KINDS)];
}

function checkSettings(md: string): string[] {
  const p: string[] = [];
  p.push(...compareMap('settings', tableMap(md, 'settings', 0, 2, p), { ...DEFAULT_CONFIG }));
  for (const row of (parseTable(md, 'settings') ?? []).slice(1)) {
    const k = code(row[0]);
    if (k !== null && Object.hasOwn(CONFIG_ENV_NAMES, k) && code(row[1]) !== CONFIG_ENV_NAMES[k as keyof typeof CONFIG_ENV_NAMES]) {
      p.push(`settings: ${k} is configured by ${CONFIG_ENV_NAMES[k as keyof typeof CONFIG_ENV_NAMES]}, the doc says ${row[1]}`);
    }
  }
  return p;
}

function checkAll(md: string): string[] {
  const ex = checkExamples(md);
  return [
    ...ex.problems,
    ...checkLimits(md),
    ...checkErrorCodes(md),
    ...checkCloseCodes(md),
    ...checkFrameTypes(md, ex.frames),
    ...checkEntryKinds(md),
    ...checkSettings(md),
  ];
}

// ------------------------------------------------------------------ the tests

describe('docs/PROTOCOL.md agrees with protocol/', () => {
  const ex = checkExamples(DOC);

  it('every example pair decodes to the same frame, re-encodes byte for byte and round-trips', () => {
    expect(ex.problems).toEqual([]);
    expect(ex.frames.length).toBeGreaterThanOrEqual(Object.keys(FRAME_TYPES).length);
  });

  it('has at least one example of every frame type', () => {
    const seen = new Set(ex.frames.map((f) => f.frame.t));
    const missing = (Object.keys(FRAME_TYPES) as FrameType[]).filter((t) => !seen.has(t));
    expect(missing).toEqual([]);
  });

  it('has malformed examples, each refused with exactly the documented error', () => {
    // Problems with malformed examples are in ex.problems (checked above); here: that there are enough of them.
    expect(ex.malformed).toBeGreaterThanOrEqual(10);
  });

  it('the limits table matches LIMITS exactly', () => {
    expect(checkLimits(DOC)).toEqual([]);
  });

  it('the error code table matches ERROR_CODES exactly', () => {
    expect(checkErrorCodes(DOC)).toEqual([]);
  });

  it('the close code table matches CLOSE_CODES exactly', () => {
    expect(checkCloseCodes(DOC)).toEqual([]);
  });

  it('the frame type table matches FRAME_TYPES exactly, with the right direction', () => {
    expect(checkFrameTypes(DOC, ex.frames)).toEqual([]);
  });

  it('the entry kind table matches ENTRY_KINDS exactly', () => {
    expect(checkEntryKinds(DOC)).toEqual([]);
  });

  it('the settings table matches DEFAULT_CONFIG and its environment names', () => {
    expect(checkSettings(DOC)).toEqual([]);
  });

  it('names the protocol constants exactly as the code does', () => {
    for (const s of [SUBPROTOCOL, `${TOKEN_SUBPROTOCOL_PREFIX}<jwt>`, PING_TEXT, PONG_TEXT, ID_PATTERN.source, CLIENT_ID_PATTERN.source, '/v1/connect']) {
      expect(DOC, s).toContain(`\`${s}\``);
    }
    expect(DOC).toContain(`exactly the ${new TextEncoder().encode(PING_TEXT).length} bytes \`${PING_TEXT}\``);
    // The ping example is the auto-answered text, byte for byte.
    const ping = ex.frames.find((f) => f.frame.t === 'ping');
    expect(ping && encodeJson(ping.frame)).toBe(PING_TEXT);
  });
});

describe('the doc checks catch disagreement', () => {
  const mutate = (find: string, replace: string): string => {
    expect(DOC).toContain(find);
    return DOC.replace(find, replace);
  };

  it('a wrong byte in an example', () => {
    const bad = mutate('ac 02                                            # cursor: 300', 'ac 03                                            # cursor: 300');
    expect(checkExamples(bad).problems.length).toBeGreaterThan(0);
  });

  it('a JSON example that decodes to another frame', () => {
    const bad = mutate('{"t":"deliver_ack","seq":302}', '{"t":"deliver_ack","seq":303}');
    expect(checkExamples(bad).problems.join('\n')).toMatch(/different frames/);
  });

  it('JSON field order or spelling other than the encoder', () => {
    const bad = mutate('{"t":"hello","device":"phone-1","cursor":0}', '{"t":"hello","cursor":0,"device":"phone-1"}');
    expect(checkExamples(bad).problems.join('\n')).toMatch(/encodeJson gives/);
  });

  it('a malformed example answered differently', () => {
    const bad = mutate('{"t":"error","code":"bad_frame","message":"empty frame"}', '{"t":"error","code":"invalid_field","message":"empty frame"}');
    expect(checkExamples(bad).problems.join('\n')).toMatch(/decoder answers/);
  });

  it('a misspelled example tag', () => {
    const bad = mutate('```hex example\n09', '```hex exmaple\n09');
    expect(checkExamples(bad).problems.join('\n')).toMatch(/unknown example tag|expected "json example/);
  });

  it('a limit missing, changed or extra', () => {
    const row = DOC.split('\n').find((l) => l.startsWith('| `maxPresenceUsers` |'))!;
    expect(checkLimits(DOC.replace(`${row}\n`, ''))).toEqual([expect.stringMatching(/maxPresenceUsers .* not in the doc/)]);
    expect(checkLimits(DOC.replace(row, row.replace('`32`', '`33`')))).toEqual([expect.stringMatching(/maxPresenceUsers is 32 in the code but 33/)]);
    expect(checkLimits(DOC.replace(row, `${row}\n| \`maxGroupSize\` | \`8\` | x | y |`))).toEqual([expect.stringMatching(/maxGroupSize is in the doc but not in the code/)]);
  });

  it('an error code, close code or frame type that differs', () => {
    expect(checkErrorCodes(mutate('| `7` | `rate_limited` |', '| `70` | `rate_limited` |')).length).toBeGreaterThan(0);
    expect(checkCloseCodes(mutate('| `4001` | `replaced` |', '| `4003` | `replaced` |')).length).toBeGreaterThan(0);
    expect(checkFrameTypes(mutate('| `6` | `deliver_ack` | client → server |', '| `6` | `deliver_ack` | server → client |'), checkExamples(DOC).frames).length).toBeGreaterThan(0);
    expect(checkFrameTypes(mutate('| `6` | `deliver_ack` |', '| `16` | `deliver_ack` |'), checkExamples(DOC).frames).length).toBeGreaterThan(0);
  });

  it('the whole document is clean', () => {
    expect(checkAll(DOC)).toEqual([]);
  });
});
