import { SignJWT } from 'jose';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REFUSALS, TokenVerifier, authConfigFromEnv, authorizeUpgrade, isRefusal, isRefusalCode, type UpgradeRequest } from '../../auth/index.js';
import { code, parseTable } from './doc-tables.js';

/**
 * docs/PROTOCOL.md against the servers (not the codec, which protocol-doc.test.ts covers): the order in which
 * refusals are decided, that the refusal tables are exactly the vocabulary (auth/refusals.ts), and which close
 * and error codes each profile really sends. An outside test found the doc saying 426/400 come before the token
 * and 1001/4000 "not sent"; these checks fail on any such disagreement, in either direction, and the last block
 * proves they can fail.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const DOC = readFileSync(join(ROOT, 'docs/PROTOCOL.md'), 'utf8');

function sources(...dirs: string[]): string {
  let out = '';
  for (const d of dirs) {
    for (const f of readdirSync(join(ROOT, d), { recursive: true, encoding: 'utf8' })) {
      if (f.endsWith('.ts') && !f.startsWith('bench')) out += readFileSync(join(ROOT, d, f), 'utf8') + '\n';
    }
  }
  return out;
}
const SERVER = sources('core', 'onprem', 'durable-objects', 'workers', 'auth');
const ADAPTERS = sources('onprem', 'durable-objects', 'workers', 'auth');

function rows(table: string): string[][] {
  const r = parseTable(DOC, table);
  if (r === null) throw new Error(`PROTOCOL.md has no <!-- table:${table} -->`);
  return r.slice(1);
}

// ------------------------------------------------------------------ refusal order

const SECRET = 'doc-order-secret';
const ISSUER = 'https://issuer.doc';

interface Spec {
  method: string;
  upgrade: boolean;
  protocols: string[];
  token: Promise<string> | null;
  limited: boolean;
  configured: boolean;
  user: string | null;
}

async function jwt(o: { sub?: string; iss?: string; exp?: number; nbf?: number; secret?: string; alg?: 'none' } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  if (o.alg === 'none') {
    const b64 = (x: object) => Buffer.from(JSON.stringify(x)).toString('base64url');
    return `${b64({ alg: 'none' })}.${b64({ sub: 'alice', iss: ISSUER, exp: now + 600 })}.`;
  }
  let t = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(o.sub ?? 'alice').setIssuer(o.iss ?? ISSUER).setExpirationTime(now + (o.exp ?? 600));
  if (o.nbf !== undefined) t = t.setNotBefore(now + o.nbf);
  return t.sign(new TextEncoder().encode(o.secret ?? SECRET));
}

/** How to make a good request fail exactly one check: keyed by the table's error code. */
const BREAK: Record<string, (s: Spec) => void> = {
  method_not_allowed: (s) => void (s.method = 'POST'),
  too_many_connects: (s) => void (s.limited = true),
  missing_token: (s) => void (s.token = null),
  token_too_large: (s) => void (s.token = Promise.resolve('x'.repeat(9000))),
  auth_not_configured: (s) => void (s.configured = false),
  malformed_token: (s) => void (s.token = Promise.resolve('not-a-jwt')),
  unsupported_algorithm: (s) => void (s.token = jwt({ alg: 'none' })),
  invalid_signature: (s) => void (s.token = jwt({ secret: 'someone-else' })),
  token_expired: (s) => void (s.token = jwt({ exp: -600 })),
  token_not_yet_valid: (s) => void (s.token = jwt({ nbf: 600 })),
  claim_invalid: (s) => void (s.token = jwt({ iss: 'https://other.doc' })),
  invalid_subject: (s) => void (s.token = jwt({ sub: 'no spaces allowed' })),
  user_mismatch: (s) => void (s.user = 'bob'),
  upgrade_required: (s) => void (s.upgrade = false),
  unsupported_protocol: (s) => void (s.protocols = ['chat.v9']),
};
/** Breaks that change the same part of the request cannot be combined. */
const TOKEN_BREAKS = new Set(['missing_token', 'token_too_large', 'malformed_token', 'unsupported_algorithm', 'invalid_signature', 'token_expired', 'token_not_yet_valid', 'claim_invalid', 'invalid_subject']);
/** The doc says these are one verification step, in the JWT library's order. */
const ONE_STEP = new Set([...TOKEN_BREAKS].filter((c) => c !== 'missing_token' && c !== 'token_too_large'));

async function decide(breaks: string[]): Promise<{ status: number; code: string } | 'ok'> {
  const s: Spec = { method: 'GET', upgrade: true, protocols: ['iris.v1'], token: jwt(), limited: false, configured: true, user: null };
  for (const b of breaks) BREAK[b]!(s);
  const headers: Record<string, string> = { 'sec-websocket-protocol': s.protocols.join(', ') };
  if (s.upgrade) headers['upgrade'] = 'websocket';
  if (s.token !== null) headers['authorization'] = `Bearer ${await s.token}`;
  const url = new URL('http://iris.test/v1/connect');
  if (s.user !== null) url.searchParams.set('user', s.user);
  const req: UpgradeRequest = { method: s.method, url, header: (n) => headers[n.toLowerCase()] ?? null, ip: '192.0.2.1' };
  const verifier = new TokenVerifier(authConfigFromEnv(s.configured ? { IRIS_JWT_SECRET: SECRET, IRIS_JWT_ISSUER: ISSUER } : {}));
  const r = await authorizeUpgrade(req, { verifier, connectLimit: () => (s.limited ? 60 : 0) });
  return isRefusal(r) ? { status: r.status, code: r.code } : 'ok';
}

describe('PROTOCOL.md section 3.3 agrees with auth/upgrade.ts', () => {
  const table = rows('refusals').map((r) => ({ status: Number(r[0]), code: code(r[1])! }));

  it('lists the path check first (each adapter routes before it authorizes) and a break for every other row', () => {
    expect(table[0]).toEqual({ status: 404, code: 'not_found' });
    expect(table.slice(1).map((r) => r.code).sort()).toEqual(Object.keys(BREAK).sort());
  });

  it('a good request passes, and each check alone answers its row', async () => {
    expect(await decide([])).toBe('ok');
    for (const row of table.slice(1)) expect(await decide([row.code]), row.code).toEqual(row);
  });

  it('when two checks fail, the one higher in the table answers', async () => {
    const ordered = table.slice(1);
    const wrong: string[] = [];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = i + 1; j < ordered.length; j++) {
        const a = ordered[i]!.code;
        const b = ordered[j]!.code;
        if (TOKEN_BREAKS.has(a) && TOKEN_BREAKS.has(b)) continue;
        if (ONE_STEP.has(a) && ONE_STEP.has(b)) continue;
        const got = await decide([a, b]);
        if (got === 'ok' || got.code !== a) wrong.push(`${a} + ${b} answered ${got === 'ok' ? 'ok' : got.code}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

// ------------------------------------------------------------------ what the adapters can send

/** Rows of a table of `md` (header dropped); a missing table is a problem, not an exception. */
function tableRows(md: string, table: string, problems: string[]): string[][] {
  const r = parseTable(md, table);
  if (r === null || r.length < 2) {
    problems.push(`table "${table}" not found`);
    return [];
  }
  return r.slice(1);
}

/** The two refusal tables of section 3.3 together against REFUSALS: the same codes, each once, same status. */
function checkRefusals(md: string): string[] {
  const problems: string[] = [];
  const documented = [...tableRows(md, 'refusals', problems), ...tableRows(md, 'refusals-server', problems)];
  const seen = new Set<string>();
  for (const r of documented) {
    const c = code(r[1]);
    const status = Number(r[0]);
    if (c === null || !Number.isInteger(status)) {
      problems.push(`refusals: cannot read row | ${r.join(' | ')} |`);
      continue;
    }
    if (seen.has(c)) problems.push(`${c}: documented twice`);
    seen.add(c);
    if (!isRefusalCode(c)) problems.push(`${c}: documented, not in REFUSALS`);
    else if (REFUSALS[c] !== status) problems.push(`${c}: documented as ${status}, REFUSALS says ${REFUSALS[c]}`);
  }
  for (const c of Object.keys(REFUSALS)) if (!seen.has(c)) problems.push(`${c}: in REFUSALS, not documented`);
  return problems;
}

// core/ runs in both profiles; each adapter only in its own.
const PROFILES = { 'On-prem': sources('core', 'onprem'), Cloudflare: sources('core', 'durable-objects', 'workers') };

/** The close-code table's profile columns against the sources of each profile, and † against both. */
function checkCloseCodeSenders(md: string): string[] {
  const problems: string[] = [];
  const header = parseTable(md, 'close-codes')?.[0] ?? [];
  for (const r of tableRows(md, 'close-codes', problems)) {
    const name = code(r[1]);
    if (name === null) {
      problems.push(`close-codes: cannot read row | ${r.join(' | ')} |`);
      continue;
    }
    const cells: string[] = [];
    for (const [profile, src] of Object.entries(PROFILES)) {
      const col = header.indexOf(profile);
      if (col < 0) {
        problems.push(`close-codes has no ${profile} column`);
        continue;
      }
      const cell = r[col] ?? '';
      cells.push(cell);
      if (!/^(sent|runtime|no)$/.test(cell)) problems.push(`${name}: ${profile} says "${cell}", expected sent, runtime or no`);
      const used = new RegExp(`CLOSE_CODES\\.${name}\\b`).test(src);
      if (used && cell !== 'sent') problems.push(`${name}: ${profile} says "${cell}", but the ${profile} server sends it`);
      if (!used && cell === 'sent') problems.push(`${name}: ${profile} says "sent", but nothing there sends it`);
    }
    const dagger = (r.at(-1) ?? '').includes('†');
    if (dagger !== cells.every((c) => c === 'no')) problems.push(`${name}: † must mark exactly the codes neither profile sends`);
  }
  return problems;
}

describe('PROTOCOL.md lists exactly the refusals and codes the servers send', () => {
  it('the two refusal tables together are auth/refusals.ts: the same codes, each once, with the same status', () => {
    expect(checkRefusals(DOC)).toEqual([]);
  });

  it('every code of the vocabulary is sent by some adapter (the type system keeps them from sending any other)', () => {
    // The ways a refusal is built: refusal('code', ...), new AuthError('code', ...), or a literal { code: 'code' }.
    const sent = new Set([...ADAPTERS.matchAll(/(?:\brefusal\(|\bAuthError\(|\bcode: )'([a-z_]+)'/g)].map((m) => m[1]!));
    expect(Object.keys(REFUSALS).filter((c) => !sent.has(c))).toEqual([]);
  });

  it('the close-code table says, per profile, exactly which codes the server itself sends', () => {
    expect(checkCloseCodeSenders(DOC)).toEqual([]);
  });

  it('every table of PROTOCOL.md is one a doc test holds against the code', () => {
    // Here: refusals, refusals-server, close-codes (senders), error-codes (†). protocol-doc.test.ts: the rest,
    // and error-codes and close-codes against the codec; protocol-refs.test.ts: ref-kinds. A new table needs a check before it is added here.
    const checked = ['refusals', 'refusals-server', 'frame-types', 'entry-kinds', 'error-codes', 'close-codes', 'limits', 'settings', 'ref-kinds'];
    const tables = [...DOC.matchAll(/<!-- table:([^ ]+) -->/g)].map((m) => m[1]!);
    expect(tables.sort()).toEqual(checked.sort());
  });

  it('error codes marked † are never sent by the core', () => {
    const core = sources('core');
    const problems: string[] = [];
    for (const r of rows('error-codes')) {
      const name = code(r[1])!;
      if (r.join('|').includes('†') && core.includes(`'${name}'`)) problems.push(`${name} is marked not sent, but core/ sends it`);
    }
    expect(problems).toEqual([]);
  });
});

describe('the refusal and close-code checks catch drift', () => {
  const mutate = (find: string, replace: string): string => {
    expect(DOC).toContain(find);
    return DOC.replace(find, replace);
  };
  const row = (prefix: string): string => DOC.split('\n').find((l) => l.startsWith(prefix))!;

  it('a refusal with another status, missing, extra, or listed twice', () => {
    const full = row('| 503 | `server_full` |');
    expect(checkRefusals(mutate(full, full.replace('| 503 |', '| 500 |')))).toEqual(['server_full: documented as 500, REFUSALS says 503']);
    expect(checkRefusals(mutate(`${full}\n`, ''))).toEqual(['server_full: in REFUSALS, not documented']);
    expect(checkRefusals(mutate(full, `${full}\n| 418 | \`teapot\` | never |`))).toEqual(['teapot: documented, not in REFUSALS']);
    expect(checkRefusals(mutate(full, `${full}\n${full}`))).toEqual(['server_full: documented twice']);
    expect(checkRefusals(mutate('<!-- table:refusals-server -->', ''))).toContain('table "refusals-server" not found');
  });

  it('a close code said sent by a profile that does not send it, or not sent by one that does', () => {
    expect(checkCloseCodeSenders(mutate('| `1001` | `going_away` | sent | no |', '| `1001` | `going_away` | sent | sent |'))).toEqual([
      'going_away: Cloudflare says "sent", but nothing there sends it',
    ]);
    expect(checkCloseCodeSenders(mutate('| `4000` | `hello_timeout` | sent | sent |', '| `4000` | `hello_timeout` | no | sent |'))).toEqual([
      'hello_timeout: On-prem says "no", but the On-prem server sends it',
    ]);
    expect(checkCloseCodeSenders(mutate('| `1011` | `internal_error` | no | no | †', '| `1011` | `internal_error` | no | no |'))).toEqual([
      'internal_error: † must mark exactly the codes neither profile sends',
    ]);
  });
});
