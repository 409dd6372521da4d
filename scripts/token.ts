/**
 * Mints an HS256 token for development and tests.
 *
 *   npm run token -- alice [--ttl 24h] [--secret S] [--iss X] [--aud Y]
 *
 * The secret is --secret, else IRIS_JWT_SECRET, else the dev secret that `npm start` (IRIS_DEV_MODE=1)
 * accepts. --iss / --aud default to IRIS_JWT_ISSUER / IRIS_JWT_AUDIENCE when those are set. The token
 * alone goes to stdout, so `TOKEN=$(npm run -s token -- alice)` works.
 */
import { SignJWT } from 'jose';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DEV_SECRET } from '../auth/config.js';
import { ID_PATTERN } from '../protocol/limits.js';

export interface MintOptions {
  /** Lifetime as jose understands it: '24h', '15m', '3600s', '-1h' (already expired). Default '24h'. */
  ttl?: string;
  secret?: string;
  issuer?: string;
  audience?: string;
}

export async function mintToken(user: string, opts: MintOptions = {}): Promise<string> {
  if (!ID_PATTERN.test(user)) throw new Error(`user "${user}": expected 1-64 chars of [A-Za-z0-9._@+=-]`);
  const env = process.env;
  const secret = opts.secret ?? (env['IRIS_JWT_SECRET'] || DEV_SECRET);
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(user)
    .setIssuedAt(now)
    .setExpirationTime(opts.ttl ?? '24h');
  const iss = opts.issuer ?? (env['IRIS_JWT_ISSUER'] || undefined);
  const aud = opts.audience ?? (env['IRIS_JWT_AUDIENCE'] || undefined);
  if (iss !== undefined) jwt.setIssuer(iss);
  if (aud !== undefined) jwt.setAudience(aud);
  return jwt.sign(new TextEncoder().encode(secret));
}

async function main(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ttl: { type: 'string' },
      secret: { type: 'string' },
      iss: { type: 'string' },
      aud: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const user = positionals[0];
  if (values.help || user === undefined || positionals.length > 1) {
    process.stderr.write('usage: npm run token -- <user> [--ttl 24h] [--secret S] [--iss X] [--aud Y]\n');
    process.exit(values.help ? 0 : 2);
  }
  const opts: MintOptions = {};
  if (values.ttl !== undefined) opts.ttl = values.ttl;
  if (values.secret !== undefined) opts.secret = values.secret;
  if (values.iss !== undefined) opts.issuer = values.iss;
  if (values.aud !== undefined) opts.audience = values.aud;
  process.stdout.write(`${await mintToken(user, opts)}\n`);
}

function isMain(): boolean {
  const arg = process.argv[1];
  if (arg === undefined) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isMain()) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    process.stderr.write(`token: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
