import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { openChat, tick } from './webchat-page.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWebchat } from '../../scripts/webchat-build.js';
import { startWrangler } from '../conformance/wrangler-target.js';
import type { Target } from '../conformance/suite.js';

/**
 * The web chat on the Cloudflare profile (README "Web chat"): `wrangler dev` serving public/ as Workers static
 * assets and /dev/token from the edge Worker (the development secret, on loopback), as `npm start` does, on a
 * free port with its own state. A subset of test/browser/webchat.test.ts (which runs against on-prem): two users
 * send and receive with ✓✓ and read ticks, a group message, a send typed offline that survives a reload made
 * offline (the service worker is served by the assets too), and a reload that keeps the history.
 */

const CHROMIUM = '/usr/bin/chromium';
const MISSING = existsSync(CHROMIUM) ? null : `no browser at ${CHROMIUM}: install chromium: apt-get install chromium`;

let target: Target;
let browser: Browser;
let origin: string;

beforeAll(async () => {
  if (MISSING) return;
  buildWebchat(); // the assets wrangler serves (startWrangler snapshots the checkout, public/chat.js included)
  target = await startWrangler();
  origin = new URL(target.url.replace(/^ws/, 'http')).origin;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await target?.stop();
});

async function open(ctx: BrowserContext, user: string): Promise<Page> {
  if (MISSING) throw new Error(MISSING);
  return openChat(ctx, origin, user);
}

describe('the web chat on wrangler dev (Cloudflare profile)', () => {
  it('serves the page, the service worker and dev tokens', async () => {
    if (MISSING) throw new Error(MISSING);
    for (const path of ['/', '/chat.js', '/chat.css', '/sw.js']) expect([path, (await fetch(`${origin}${path}`)).status]).toEqual([path, 200]);
    const r = await fetch(`${origin}/dev/token?user=cf-zed`);
    expect(r.status).toBe(200);
  });

  it('two users: send, receive, ticks, a group, offline send across an offline reload, reload keeps history', async () => {
    const ca = await browser.newContext();
    const cb = await browser.newContext();
    const a = await open(ca, 'cf-alice');
    const b = await open(cb, 'cf-bob');

    await a.fill('#peer-name', 'cf-bob');
    await a.press('#peer-name', 'Enter');
    await a.fill('#text', 'hello from the edge');
    await a.press('#text', 'Enter');
    await b.locator('li[data-conv="cf-alice"] .unread', { hasText: '1' }).waitFor();
    await tick(a, 'hello from the edge').and(a.locator('[data-tick="delivered"]')).waitFor();
    await b.click('li[data-conv="cf-alice"]');
    await b.locator('.msg.theirs', { hasText: 'hello from the edge' }).waitFor();
    await tick(a, 'hello from the edge').and(a.locator('[data-tick="read"]')).waitFor();

    // Alice offline: a send queued, the page reloaded without a network, then the network back.
    expect(await a.evaluate('navigator.serviceWorker.ready.then((r) => r.active.scriptURL)')).toBe(`${origin}/sw.js`);
    await ca.setOffline(true);
    await a.locator('#banner', { hasText: 'Offline' }).waitFor();
    await a.fill('#text', 'queued at the edge');
    await a.press('#text', 'Enter');
    await a.locator('#banner', { hasText: '1 message queued' }).waitFor();
    await a.reload();
    await a.locator('#banner', { hasText: '1 message queued' }).waitFor();
    await ca.setOffline(false);
    await b.locator('.msg.theirs', { hasText: 'queued at the edge' }).waitFor({ timeout: 30_000 });
    await a.click('li[data-conv="cf-bob"]');
    await tick(a, 'queued at the edge').and(a.locator('[data-tick="read"]')).waitFor();

    // A group: created with Bob, read by him.
    await a.fill('#group-name', 'edge team');
    await a.fill('#group-members', 'cf-bob');
    await a.click('#new-group button');
    await a.locator('#peer', { hasText: '# edge team' }).waitFor();
    await a.fill('#text', 'hi edge team');
    await a.press('#text', 'Enter');
    await b.locator('li.conv', { hasText: '# edge team' }).click();
    await b.locator('.msg.theirs', { hasText: 'hi edge team' }).waitFor();
    await tick(a, 'hi edge team').and(a.locator('[data-tick="read"]')).waitFor({ timeout: 30_000 });

    // Bob reloads: the same history.
    await b.click('li[data-conv="cf-alice"]');
    const before = await b.locator('.msg').allTextContents();
    await b.reload();
    await b.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
    await b.click('li[data-conv="cf-alice"]');
    expect(await b.locator('.msg').allTextContents()).toEqual(before);
    expect(before).toEqual([expect.stringContaining('hello from the edge'), expect.stringContaining('queued at the edge')]);
    await ca.close();
    await cb.close();
  }, 180_000);
});
