/**
 * Mints an HS256 token for development and tests.
 *
 *   npm run token -- alice [--ttl 24h] [--jwt-secret S] [--jwt-issuer X] [--jwt-audience Y]
 *
 * The flags are the server's own (IRIS_JWT_SECRET <-> --jwt-secret on on-prem, core/settings.ts), so the
 * values that configure the server mint tokens it accepts; the older --secret / --iss / --aud still work.
 * The secret is --jwt-secret, else IRIS_JWT_SECRET, else the dev secret that `npm start` (IRIS_DEV_MODE=1)
 * accepts. --jwt-issuer / --jwt-audience default to IRIS_JWT_ISSUER / IRIS_JWT_AUDIENCE when those are set.
 * The token alone goes to stdout, so `TOKEN=$(npm run -s token -- alice)` works.
 */
import { SignJWT } from 'jose';
import { parseArgs } from 'node:util';
import { DEV_SECRET } from '../auth/config.js';
import { ID_PATTERN } from '../protocol/limits.js';
import { isMain } from './lib/main.js';

export interface MintOptions {
  /** Lifetime as jose understands it: '24h', '15m', '3600s', '-1h' (already expired). Default '24h'. */
  ttl?: string;
  secret?: string;
  issuer?: string;
  audience?: string;
  /** Token id: what a single-token revocation names (admin API). Default: a random UUID, so every token can be revoked. */
  jti?: string;
  /** Issued at, seconds since epoch (default: now): a "log out everywhere" refuses tokens issued before its time. */
  iat?: number;
}

export async function mintToken(user: string, opts: MintOptions = {}): Promise<string> {
  if (!ID_PATTERN.test(user)) throw new Error(`user "${user}": expected 1-64 chars of [A-Za-z0-9._@+=-]`);
  const env = process.env;
  const secret = opts.secret ?? (env['IRIS_JWT_SECRET'] || DEV_SECRET);
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt(opts.iat ?? now)
    .setJti(opts.jti ?? crypto.randomUUID())
    .setExpirationTime(opts.ttl ?? '24h');
  const iss = opts.issuer ?? (env['IRIS_JWT_ISSUER'] || undefined);
  const aud = opts.audience ?? (env['IRIS_JWT_AUDIENCE'] || undefined);
  if (iss !== undefined) jwt.setIssuer(iss);
  if (aud !== undefined) jwt.setAudience(aud);
  return jwt.sign(new TextEncoder().encode(secret));
}

const USAGE = 'usage: npm run token -- <user> [--ttl 24h] [--jwt-secret S] [--jwt-issuer X] [--jwt-audience Y]\n';

/** The server's flag name for each option, and the short name it had before (kept for scripts that use it). */
const RENAMED = { 'jwt-secret': 'secret', 'jwt-issuer': 'iss', 'jwt-audience': 'aud' } as const;

/** Parses the command line; throws on unknown flags or an option given under both of its names. */
export function tokenArgs(argv: string[]): { user: string | undefined; extra: number; help: boolean; opts: MintOptions } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ttl: { type: 'string' },
      'jwt-secret': { type: 'string' },
      'jwt-issuer': { type: 'string' },
      'jwt-audience': { type: 'string' },
      secret: { type: 'string' },
      iss: { type: 'string' },
      aud: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const pick = (name: keyof typeof RENAMED): string | undefined => {
    const now = values[name];
    const old = values[RENAMED[name]];
    if (now !== undefined && old !== undefined) throw new Error(`--${name} and --${RENAMED[name]} are the same option: give one`);
    return now ?? old;
  };
  const opts: MintOptions = {};
  if (values.ttl !== undefined) opts.ttl = values.ttl;
  const secret = pick('jwt-secret');
  const issuer = pick('jwt-issuer');
  const audience = pick('jwt-audience');
  if (secret !== undefined) opts.secret = secret;
  if (issuer !== undefined) opts.issuer = issuer;
  if (audience !== undefined) opts.audience = audience;
  return { user: positionals[0], extra: Math.max(0, positionals.length - 1), help: values.help === true, opts };
}

async function main(argv: string[]): Promise<void> {
  const { user, extra, help, opts } = tokenArgs(argv);
  if (help || user === undefined || extra > 0) {
    process.stderr.write(USAGE);
    process.exit(help ? 0 : 2);
  }
  process.stdout.write(`${await mintToken(user, opts)}\n`);
}

if (isMain(import.meta.url)) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`token: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
