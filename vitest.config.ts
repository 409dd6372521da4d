import { cloudflareTest } from '@cloudflare/vitest-plugin';
import { readFileSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

const testKeys = JSON.parse(readFileSync(new URL('./test/fixtures/test-keys.json', import.meta.url), 'utf8')) as { jwks: unknown };

/** The projects that start the on-prem server or import the SDK by package name run dist/: built once per run. */
const BUILD = 'test/build-dist.ts';

/**
 * Six projects, one `npm test`:
 *   unit        — protocol codec, core mailbox, auth, SDK: plain Node, no platform
 *   workers     — the edge Worker and the Durable Object inside workerd (vitest plugin)
 *   conformance — the black-box suite over the SDK, against real servers it starts itself
 *   onprem      — on-prem specific tests (multi-process server)
 *   cluster     — cluster mode on a real 3-server NATS JetStream cluster (issue 13)
 *   browser     — the SDK in headless Chromium (system /usr/bin/chromium) against an on-prem server
 */
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], environment: 'node' } },
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                IRIS_JWT_SECRET: 'test-secret',
                IRIS_JWT_ISSUER: 'https://issuer.test',
                IRIS_JWT_AUDIENCE: 'iris-test',
                IRIS_JWT_CLOCK_TOLERANCE: '5',
                IRIS_JWKS: JSON.stringify(testKeys.jwks),
                IRIS_INBOX_CAP: '20',
                IRIS_RATE_PER_SEC: '100',
                IRIS_RATE_BURST: '1200',
                IRIS_RETRY_BASE_MS: '50',
                IRIS_FULL_RETRY_MS: '200',
                // Far longer than any test, so the shard's real alarm never closes a socket mid-test:
                // test/workers/liveness.test.ts backdates sockets and runs the alarm itself.
                IRIS_HELLO_TIMEOUT_MS: '600000',
              },
            },
          }),
        ],
        test: { name: 'workers', include: ['test/workers/**/*.test.ts'] },
      },
      {
        test: {
          name: 'conformance',
          // With IRIS_CONFORMANCE_URL set, only the suite against that server; otherwise against the servers
          // the suite starts itself (wrangler dev, on-prem).
          include: process.env['IRIS_CONFORMANCE_URL'] ? ['test/conformance/url.test.ts'] : ['test/conformance/**/*.test.ts'],
          exclude: process.env['IRIS_CONFORMANCE_URL'] ? [] : ['test/conformance/url.test.ts'],
          globalSetup: [BUILD],
          environment: 'node',
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          // The SDK in a real browser (Chromium via playwright-core) against an on-prem server. The global
          // setup installs Debian's chromium when it is missing and apt-get can run; otherwise the tests fail,
          // never skip.
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          globalSetup: [BUILD, 'test/browser/install-chromium.ts'],
          environment: 'node',
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
      {
        test: {
          // Cluster mode on NATS JetStream (issue 13): each file starts a real 3-server nats-server cluster
          // (test/cluster/nats-harness.ts; .ci/run installs Debian's nats-server).
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          // The end-to-end files start the built server (dist/), like the onprem project.
          globalSetup: [BUILD],
          environment: 'node',
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'onprem',
          include: ['test/onprem/**/*.test.ts'],
          globalSetup: [BUILD],
          environment: 'node',
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
