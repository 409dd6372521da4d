import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * Global setup of the browser project: `npm test` on a fresh machine must pass without a manual step, and the
 * only browser this workplace can have is Debian's (a test tool's own browser download is blocked). So when
 * /usr/bin/chromium is missing and we may use apt-get (root, apt present), install it, bounded in time. If that
 * is not possible the browser tests fail with "install chromium: apt-get install chromium" — never skip.
 */
export default function installChromium(): void {
  if (existsSync('/usr/bin/chromium')) return;
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/apt-get')) {
    console.warn('browser tests: /usr/bin/chromium is missing and apt-get cannot run here: install chromium (apt-get install chromium)');
    return;
  }
  console.warn('browser tests: installing Debian chromium (apt-get install chromium), once ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', 'chromium']]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env, timeout: 600_000 });
    if (r.status !== 0) {
      console.warn(`browser tests: apt-get ${args.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`})`);
      return;
    }
  }
}
