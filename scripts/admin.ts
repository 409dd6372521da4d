/**
 * The admin API from the command line (docs/OPERATIONS.md "Admin API"; both profiles serve the same API):
 *
 *   npm run admin -- revoke <user> --jti <jti> --exp <seconds>   revoke one token until its exp
 *   npm run admin -- revoke <user> [--before <seconds>]          revoke every token issued before (default: now)
 *   npm run admin -- disconnect <user> [--device <device>]       close the user's (or one device's) connections
 *   npm run admin -- stats [<user>]                              the deployment's, or one user's, stats
 *   npm run admin -- export <user>                               every stored row of the user (JSON)
 *   npm run admin -- erase <user>                                delete them (the right to be forgotten)
 *
 * --url (default IRIS_ADMIN_URL, else http://127.0.0.1:8787: `npm start`; on-prem: http://127.0.0.1:8788) and
 * --secret (default IRIS_ADMIN_SECRET). Prints the server's JSON answer; exits 1 on a non-2xx answer.
 */
import { parseArgs } from 'node:util';
import { isMain } from './lib/main.js';

const USAGE = `usage: npm run admin -- <command> [options]
  revoke <user> --jti <jti> --exp <seconds>   revoke one token until its exp
  revoke <user> [--before <seconds>]          revoke every token issued before (default: now)
  disconnect <user> [--device <device>]       close the user's (or one device's) connections (4007)
  stats [<user>]                              the deployment's, or one user's, stats
  export <user>                               every stored row of the user (JSON)
  erase <user>                                delete them: the right to be forgotten
options: --url <http://host:port> (IRIS_ADMIN_URL)  --secret <s> (IRIS_ADMIN_SECRET)
`;

export interface AdminRequestSpec {
  method: 'GET' | 'POST';
  path: string;
}

/** The HTTP request a command line stands for; throws with a usage message when it is not one. */
export function adminRequest(argv: string[]): { req: AdminRequestSpec; url: string | undefined; secret: string | undefined } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      jti: { type: 'string' },
      exp: { type: 'string' },
      before: { type: 'string' },
      device: { type: 'string' },
      url: { type: 'string' },
      secret: { type: 'string' },
    },
  });
  const [cmd, user, ...rest] = positionals;
  if (rest.length > 0) throw new Error(`unexpected arguments: ${rest.join(' ')}`);
  const u = (name: string) => {
    if (user === undefined) throw new Error(`${name} needs a user`);
    return `users/${encodeURIComponent(user)}`;
  };
  const q = new URLSearchParams();
  let req: AdminRequestSpec;
  switch (cmd) {
    case 'revoke':
      if (values.jti !== undefined) {
        if (values.exp === undefined) throw new Error('revoke --jti needs --exp (the token\'s exp, seconds since epoch)');
        q.set('jti', values.jti);
        q.set('exp', values.exp);
      } else if (values.before !== undefined) q.set('before', values.before);
      req = { method: 'POST', path: `${u('revoke')}/revoke` };
      break;
    case 'disconnect':
      if (values.device !== undefined) q.set('device', values.device);
      req = { method: 'POST', path: `${u('disconnect')}/disconnect` };
      break;
    case 'stats':
      req = { method: 'GET', path: user === undefined ? 'stats' : `${u('stats')}/stats` };
      break;
    case 'export':
      req = { method: 'GET', path: `${u('export')}/export` };
      break;
    case 'erase':
      req = { method: 'POST', path: `${u('erase')}/erase` };
      break;
    default:
      throw new Error(cmd === undefined ? 'no command' : `unknown command "${cmd}"`);
  }
  const qs = q.toString();
  if (qs !== '') req.path += `?${qs}`;
  return { req, url: values.url, secret: values.secret };
}

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = adminRequest(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  const base = (parsed.url ?? process.env['IRIS_ADMIN_URL'] ?? 'http://127.0.0.1:8787').replace(/\/+$/, '');
  const secret = parsed.secret ?? process.env['IRIS_ADMIN_SECRET'];
  const headers: Record<string, string> = secret ? { authorization: `Bearer ${secret}` } : {};
  const res = await fetch(`${base}/admin/v1/${parsed.req.path}`, { method: parsed.req.method, headers });
  const text = await res.text();
  process.stdout.write(`${text}\n`);
  if (!res.ok) process.exit(1);
}

if (isMain(import.meta.url)) {
  main().catch((e: unknown) => {
    process.stderr.write(`admin: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
