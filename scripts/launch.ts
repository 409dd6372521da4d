/**
 * Runs `node <args>` so that a signal sent to the npm process reaches it, and nothing it started outlives it.
 *
 * `npm run X` runs `sh -c "<script>"`. npm forwards SIGTERM and SIGINT to that shell only, and the shell
 * (dash) neither passes them on nor execs its last command: `kill <npm pid>` left `wrangler dev` / workerd or
 * the on-prem supervisor running, orphaned. npm does not forward SIGHUP at all: it just dies. So the scripts
 * say `exec sh scripts/node.sh --import tsx scripts/launch.ts ...` (the shell becomes this process), and this:
 *
 * - starts the program in its own process group, so that whatever it starts (workerd, on-prem workers) can
 *   be found and stopped as a group;
 * - passes SIGTERM and SIGINT to the program, and SIGHUP as SIGTERM (wrangler dies without cleaning up on
 *   SIGHUP; the supervisor drains on either);
 * - treats the death of its parent (npm killed by SIGHUP, or by anything) like SIGHUP;
 * - once the program exited, sends SIGTERM to what is left of its group, then SIGKILL after 5 s, and exits
 *   with the program's status.
 *
 * A terminal's Ctrl-C reaches npm and this process (the foreground group), not the program's group: the
 * program gets it once, from here.
 */
import { spawn } from 'node:child_process';

const FORWARD = { SIGTERM: 'SIGTERM', SIGINT: 'SIGINT', SIGHUP: 'SIGTERM' } as const;
const PARENT_CHECK_MS = 250;
const GROUP_GRACE_MS = 5000;

const args = process.argv.slice(2);
if (args.length === 0) {
  process.stderr.write('usage: node scripts/launch.ts <node arguments...>\n');
  process.exit(2);
}

const child = spawn(process.execPath, args, { stdio: 'inherit', detached: true });
const pgid = child.pid;
if (pgid === undefined) {
  process.stderr.write(`launch: cannot start ${args.join(' ')}\n`);
  process.exit(1);
}

/** Signals the program's whole process group; 0 only asks whether anyone is left in it. */
function signalGroup(sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid!, sig);
    return true;
  } catch {
    return false; // ESRCH: the group is empty
  }
}

/**
 * A terminal's Ctrl-C reaches this process twice: from the terminal (we are in its foreground group) and
 * from npm, which forwards SIGINT to its child. The on-prem supervisor reads a second SIGINT as "stop
 * waiting, kill the workers", so copies of one signal arriving together count once. A person pressing
 * Ctrl-C again is far slower than this window.
 */
const SAME_SIGNAL_MS = 300;
const lastSent = new Map<NodeJS.Signals, number>();

function forward(sig: NodeJS.Signals): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const now = Date.now();
  const last = lastSent.get(sig);
  if (last !== undefined && now - last < SAME_SIGNAL_MS) return;
  lastSent.set(sig, now);
  try {
    child.kill(sig);
  } catch {
    // Already gone; the exit handler sweeps the group.
  }
}

for (const [got, send] of Object.entries(FORWARD) as [NodeJS.Signals, NodeJS.Signals][]) process.on(got, () => forward(send));

const parent = process.ppid;
const watch = setInterval(() => {
  if (process.ppid !== parent) {
    clearInterval(watch);
    forward('SIGTERM');
  }
}, PARENT_CHECK_MS);

child.on('exit', (code, signal) => {
  clearInterval(watch);
  const status = code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGINT' ? 2 : 15);
  if (!signalGroup('SIGTERM')) process.exit(status);
  // Something it started is still there (e.g. workerd after wrangler died on a signal): wait, then force.
  const deadline = Date.now() + GROUP_GRACE_MS;
  const sweep = setInterval(() => {
    if (!signalGroup(0)) {
      clearInterval(sweep);
      process.exit(status);
    }
    if (Date.now() > deadline) {
      signalGroup('SIGKILL');
      clearInterval(sweep);
      process.exit(status);
    }
  }, 50);
});
