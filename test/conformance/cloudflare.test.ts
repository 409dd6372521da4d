import { runConformance } from './suite.js';
import { startWrangler } from './wrangler-target.js';

/** The conformance suite against the Cloudflare profile: `wrangler dev` (workerd + local SQLite) it starts itself. */
runConformance('cloudflare (wrangler dev)', () => startWrangler());
