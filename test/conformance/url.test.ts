import { runConformance } from './suite.js';
import { startUrlTarget } from './url-target.js';

/**
 * The conformance suite against an already running server: IRIS_CONFORMANCE_URL=ws://host:port/v1/connect.
 * vitest.config.ts includes this file only when that variable is set (and then leaves out the suites that
 * start their own servers). Tokens are HS256 with IRIS_CONFORMANCE_SECRET (else IRIS_JWT_SECRET,
 * else the dev secret). Every test runs, the restart test included: it runs IRIS_CONFORMANCE_RESTART_CMD and
 * fails, loudly, when that is not set — an external server cannot be restarted otherwise.
 */
const url = process.env['IRIS_CONFORMANCE_URL'];
if (!url) throw new Error('set IRIS_CONFORMANCE_URL=ws://host:port/v1/connect to run this file');
runConformance(`external (${url})`, () => startUrlTarget(url));
