/** Entry of one worker process, forked by the supervisor (onprem/supervisor.ts). Not meant to be run by hand. */
import { runWorker } from './worker.js';

if (!process.send) {
  process.stderr.write('iris-onprem: worker-main is started by the supervisor; run bin/iris-onprem\n');
  process.exit(2);
}
await runWorker();
