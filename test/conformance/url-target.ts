import { spawn } from 'node:child_process';
import { DEV_SECRET } from '../../auth/config.js';
import { mintToken, type MintOptions } from '../../scripts/token.js';
import { waitHealthy } from './helpers.js';
import type { Target } from './suite.js';

/**
 * A server someone else runs. Environment:
 *   IRIS_CONFORMANCE_SECRET        HS256 secret it accepts (default IRIS_JWT_SECRET, else the dev secret)
 *   IRIS_CONFORMANCE_ISSUER / _AUDIENCE   iss / aud it requires, if any
 *   IRIS_CONFORMANCE_RESTART_CMD   shell command that restarts it keeping its data (for the restart test)
 *   IRIS_CONFORMANCE_ADMIN_SECRET  its IRIS_ADMIN_SECRET (the admin API tests need it)
 *   IRIS_CONFORMANCE_EXPIRY_GRACE_S  its IRIS_TOKEN_EXPIRY_GRACE_S, when not the default 60
 */
export async function startUrlTarget(url: string): Promise<Target> {
  const env = process.env;
  const base: MintOptions = { secret: env['IRIS_CONFORMANCE_SECRET'] || env['IRIS_JWT_SECRET'] || DEV_SECRET };
  if (env['IRIS_CONFORMANCE_ISSUER']) base.issuer = env['IRIS_CONFORMANCE_ISSUER'];
  if (env['IRIS_CONFORMANCE_AUDIENCE']) base.audience = env['IRIS_CONFORMANCE_AUDIENCE'];
  await waitHealthy(url, 10_000);
  return {
    url,
    token: (user, o) => mintToken(user, { ...base, ...o, ttl: o?.expiresIn ?? '1h' }),
    ...(env['IRIS_CONFORMANCE_ADMIN_SECRET'] && { adminToken: env['IRIS_CONFORMANCE_ADMIN_SECRET'] }),
    ...(env['IRIS_CONFORMANCE_EXPIRY_GRACE_S'] && { tokenExpiryGraceS: Number(env['IRIS_CONFORMANCE_EXPIRY_GRACE_S']) }),
    restart: async () => {
      const cmd = env['IRIS_CONFORMANCE_RESTART_CMD'];
      if (!cmd) throw new Error('cannot restart an external server: set IRIS_CONFORMANCE_RESTART_CMD to a command that restarts it keeping its data');
      await new Promise<void>((resolve, reject) => {
        const c = spawn('sh', ['-c', cmd], { stdio: 'inherit' });
        c.on('error', reject);
        c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`IRIS_CONFORMANCE_RESTART_CMD exited with ${code}`))));
      });
      await waitHealthy(url, 60_000);
    },
    stop: async () => {},
  };
}
