import { startOnprem } from './onprem-target.js';
import { runConformance } from './suite.js';

/** The conformance suite against the on-prem profile: the built server (dist/onprem/main.js), two workers. */
runConformance('onprem (2 workers)', () => startOnprem({ workers: 2 }));
