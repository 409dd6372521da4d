import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { build, type Metafile } from 'esbuild';
import { Miniflare, convertV4MiniflareOptions } from 'miniflare';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../scripts/lib/net.js';
import { packInto, removeDir, sdkClient, startServer, tempDir, token, waitFor, type ServerProcess } from '../onprem/helpers.js';

/**
 * An app imports the SDK by package name. The package is installed the way an app gets it: `npm pack` of this
 * repository unpacked into the app's node_modules/iris (built JavaScript and declarations only, no TypeScript
 * source), and the app's code says `import { IrisClient } from 'iris'`. Then:
 *   - browser: esbuild bundles the app (every input but the app itself comes from node_modules/iris/dist/),
 *     Chromium loads it and it talks to an on-prem server both ways;
 *   - Node: the app runs with plain Node (no loader) and sends a message; `iris/node-store` is the file store;
 *   - Workers: the app bundled with workerd's conditions loads and runs in workerd (Miniflare).
 */

const CHROMIUM = '/usr/bin/chromium';
const MISSING = existsSync(CHROMIUM) ? null : `no browser at ${CHROMIUM}: install chromium: apt-get install chromium`;

const BROWSER_APP = `
import { IrisClient } from 'iris';
const q = new URLSearchParams(location.search);
const client = new IrisClient({ url: q.get('url'), token: q.get('token'), device: 'tab', reconnect: { baseMs: 50, maxMs: 500 } });
const got = [];
client.on('message', (m) => got.push(m.text()));
const connected = client.connect().then(() => 'open', (e) => 'failed: ' + (e && e.code));
globalThis.app = {
  connected: () => connected,
  send: (to, text) => client.send(to, text).then(() => 'acked'),
  got: () => got,
};
`;

const NODE_APP = `
import { IrisClient } from 'iris';
import { FileStore } from 'iris/node-store';
const [url, token, dir] = process.argv.slice(2);
const client = new IrisClient({ url, token, device: 'node1', store: new FileStore(dir) });
await client.connect();
await client.send('pkg-bob', 'from node');
await client.close();
console.log('sent');
`;

const WORKER_APP = `
import { IrisClient, backoffDelay } from 'iris';
export default {
  async fetch() {
    const client = new IrisClient({ url: 'ws://127.0.0.1:9/v1/connect', token: 't', device: 'w1' });
    return new Response(JSON.stringify({ state: client.state, backoff: typeof backoffDelay }));
  },
};
`;

let app: string;
let server: ServerProcess;
let url: string;
let dataDir: string;
let http: Server | undefined;
let browser: Browser | undefined;

beforeAll(async () => {
  app = tempDir('iris-app-');
  await packInto(join(app, 'node_modules/iris'));
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  writeFileSync(join(app, 'browser-app.js'), BROWSER_APP);
  writeFileSync(join(app, 'node-app.js'), NODE_APP);
  writeFileSync(join(app, 'worker-app.js'), WORKER_APP);
  ({ server, url, dataDir } = await startServer({ workers: 1 }));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await new Promise<void>((r) => (http ? http.close(() => r()) : r()));
  await server?.stop();
  if (dataDir) removeDir(dataDir);
  if (app) removeDir(app);
});

/** The files a bundle was made of, relative to the app directory. */
const inputs = (meta: Metafile): string[] => Object.keys(meta.inputs).sort();

describe('the SDK imported by package name', () => {
  it('ships built JavaScript and declarations, no TypeScript source', () => {
    expect(existsSync(join(app, 'node_modules/iris/dist/client/index.js'))).toBe(true);
    expect(existsSync(join(app, 'node_modules/iris/dist/client/index.d.ts'))).toBe(true);
    expect(existsSync(join(app, 'node_modules/iris/client'))).toBe(false);
  });

  it('in a browser bundle, loaded by Chromium, sends and receives', async () => {
    if (MISSING) throw new Error(MISSING);
    const bundle = await build({
      entryPoints: ['browser-app.js'],
      absWorkingDir: app,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    const files = inputs(bundle.metafile);
    expect(files).toContain('node_modules/iris/dist/client/index.js');
    expect(files.filter((f) => f !== 'browser-app.js' && !f.startsWith('node_modules/iris/dist/'))).toEqual([]);
    const js = bundle.outputFiles[0]!.text;

    const port = await freePort();
    http = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/app.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
      else if (path === '/') res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><meta charset="utf-8"><script type="module" src="/app.js"></script>');
      else res.writeHead(404).end();
    });
    await new Promise<void>((r) => http!.listen(port, '127.0.0.1', r));
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${port}/?${new URLSearchParams({ url, token: await token('pkg-web') })}`);
    await page.waitForFunction(() => 'app' in globalThis);
    expect(await page.evaluate('globalThis.app.connected()')).toBe('open');

    const bob = sdkClient(url, 'pkg-bob', 'b1');
    const toBob: string[] = [];
    bob.on('message', (m) => void toBob.push(m.text()));
    await bob.connect();
    try {
      expect(await page.evaluate(`globalThis.app.send('pkg-bob', 'from the page')`)).toBe('acked');
      await waitFor('bob to get the page message', () => toBob.includes('from the page'));
      await bob.send('pkg-web', 'to the page');
      await waitFor('the page to get bob message', async () => ((await page.evaluate('globalThis.app.got()')) as string[]).includes('to the page'));
    } finally {
      await bob.close();
    }
  });

  it('in Node, with no loader, sends; iris/node-store is the file store', async () => {
    const bob = sdkClient(url, 'pkg-bob', 'b2');
    const toBob: string[] = [];
    bob.on('message', (m) => void toBob.push(m.text()));
    await bob.connect();
    try {
      const tok = await token('pkg-node');
      const out = await new Promise<string>((res, rej) => {
        execFile(process.execPath, ['node-app.js', url, tok, join(app, 'store')], { cwd: app, timeout: 60_000 }, (e, stdout, stderr) =>
          e ? rej(new Error(`${e.message}\n${stderr}`)) : res(stdout),
        );
      });
      expect(out.trim()).toBe('sent');
      await waitFor('bob to get the Node app message', () => toBob.includes('from node'));
    } finally {
      await bob.close();
    }
  });

  it('in workerd, bundled with the Workers conditions', async () => {
    const bundle = await build({
      entryPoints: ['worker-app.js'],
      absWorkingDir: app,
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      conditions: ['workerd', 'worker', 'browser'],
      target: 'es2022',
      write: false,
      metafile: true,
      logLevel: 'silent',
    });
    expect(inputs(bundle.metafile).filter((f) => f !== 'worker-app.js' && !f.startsWith('node_modules/iris/dist/'))).toEqual([]);
    const mf = new Miniflare(convertV4MiniflareOptions({ modules: true, script: bundle.outputFiles[0]!.text, compatibilityDate: '2026-10-01' }));
    try {
      const res = await mf.dispatchFetch('http://app.test/');
      expect(await res.json()).toEqual({ state: 'closed', backoff: 'function' });
    } finally {
      await mf.dispose();
    }
  });
});
