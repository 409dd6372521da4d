import { startOnprem } from './onprem-target.js';
import { runConformance } from './suite.js';

/** The conformance suite against the on-prem profile: onprem/main.ts with two worker processes, started here. */
runConformance('onprem (2 workers)', () => startOnprem({ workers: 2 }));
