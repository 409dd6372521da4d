/**
 * iris-onprem: the Iris engine on one machine (npm run onprem, bin/iris-onprem). See docs/OPERATIONS.md.
 * This process is the supervisor; it forks one worker process (onprem/worker-main.ts) per core. Both run built:
 * dist/onprem/main.js and dist/onprem/worker-main.js (npm run build).
 */
import { runSupervisor } from './supervisor.js';

const code = await runSupervisor(process.argv.slice(2));
process.exit(code);
