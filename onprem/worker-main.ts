/** Entry of one worker process, forked by the supervisor (onprem/supervisor.ts). Not meant to be run by hand. */
import { runWorker } from './worker.js';

if (!process.send) {
  process.stderr.write('iris-onprem: worker-main.ts is started by the supervisor; run onprem/main.ts\n');
  process.exit(2);
}
await runWorker();
