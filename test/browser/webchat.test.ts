import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { openChat, tick } from './webchat-page.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT, removeDir, startServer, type ServerProcess } from '../onprem/helpers.js';

/**
 * The web chat (README "Web chat", issue 12) in a real browser: Debian's Chromium, headless and off the network,
 * two browser contexts as two users against an on-prem server in development mode that serves the page itself
 * (its /dev/token gives the page its tokens). Send and receive, ✓ / ✓✓ / read ticks, unread counts, typing,
 * presence, one side offline with a send queued and delivered on return, a reload that keeps the history, groups.
 * `IRIS_SCREENSHOT=1` also writes docs/webchat.png (the README's picture).
 */

const CHROMIUM = '/usr/bin/chromium';
const MISSING = existsSync(CHROMIUM) ? null : `no browser at ${CHROMIUM}: install chromium: apt-get install chromium`;

let dev: { server: ServerProcess; dataDir: string; port: number };
let prod: { server: ServerProcess; dataDir: string; port: number };
let browser: Browser;
let origin: string;

beforeAll(async () => {
  if (MISSING) return;
  // Development mode: no key configured (TEST_ENV's secret blanked), so the dev secret and /dev/token exist.
  [dev, prod] = await Promise.all([startServer({ workers: 1, env: { IRIS_JWT_SECRET: '', IRIS_DEV_MODE: '1' } }), startServer({ workers: 1 })]);
  origin = `http://127.0.0.1:${dev.port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  for (const s of [dev, prod]) {
    await s?.server.stop();
    if (s) removeDir(s.dataDir);
  }
});

function needBrowser(): void {
  if (MISSING) throw new Error(MISSING);
}

const open = (ctx: BrowserContext, user: string): Promise<Page> => openChat(ctx, origin, user);

describe('the web chat served by the on-prem server', () => {
  it('serves the page at / on both modes, and dev tokens only in development mode', async () => {
    for (const port of [dev.port, prod.port]) {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      expect([r.status, r.headers.get('content-type')]).toEqual([200, 'text/html; charset=utf-8']);
      expect((await fetch(`http://127.0.0.1:${port}/chat.js`)).status).toBe(200);
    }
    const ok = await fetch(`${origin}/dev/token?user=wc-zed`);
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { token: string }).token.split('.')).toHaveLength(3);
    expect((await fetch(`${origin}/dev/token?user=bad%20name`)).status).toBe(400);
    expect((await fetch(`http://127.0.0.1:${prod.port}/dev/token?user=wc-zed`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${prod.port}/healthz`)).status).toBe(200);
  });

  it('in production the page asks for a token the app supplies', async () => {
    needBrowser();
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${prod.port}/?user=wc-prod`);
    await page.locator('#token-row').waitFor({ state: 'visible' });
    expect(await page.locator('#login-error').textContent()).toContain('paste a token');
    await ctx.close();
  });

  it('a page that cannot reach the server when it opens connects by itself once it can', async () => {
    needBrowser();
    const ctx = await browser.newContext();
    const page = await open(ctx, 'wc-carol'); // signed in once; the page remembers the user
    // Now the server is out of reach: no token, no WebSocket, no probe of the refusal.
    await ctx.route('**/dev/token*', (r) => r.abort('internetdisconnected'));
    await ctx.route('**/v1/connect*', (r) => r.abort('internetdisconnected'));
    let reachable = false; // a WebSocket route stays (unrouteAll leaves it): it passes sockets through later
    await ctx.routeWebSocket('**/v1/connect*', (ws) => (reachable ? ws.connectToServer() : ws.close({ code: 1011 })));
    await page.reload();
    await page.locator('#banner', { hasText: 'Offline' }).waitFor();
    expect(await page.locator('#status').textContent()).not.toBe('open');
    reachable = true;
    await ctx.unrouteAll();
    await page.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
    await page.locator('#banner').waitFor({ state: 'hidden' });
    await ctx.close();
  });

  it('a send typed offline survives a reload while still offline and goes out, once, when the network returns', async () => {
    needBrowser();
    const ca = await browser.newContext();
    const cb = await browser.newContext();
    const a = await open(ca, 'wc-dora');
    const b = await open(cb, 'wc-eve');
    // The page's service worker keeps the page itself: without it an offline reload is the browser's error page.
    expect(await a.evaluate('navigator.serviceWorker.ready.then((r) => r.active.scriptURL)')).toBe(`${origin}/sw.js`);
    await a.fill('#peer-name', 'wc-eve');
    await a.press('#peer-name', 'Enter');
    await a.fill('#text', 'before the trip');
    await a.press('#text', 'Enter');
    await tick(a, 'before the trip').and(a.locator('[data-tick="delivered"]')).waitFor();

    await ca.setOffline(true);
    await a.locator('#banner', { hasText: 'Offline' }).waitFor();
    await a.fill('#text', 'typed in the tunnel');
    await a.press('#text', 'Enter');
    await a.locator('#banner', { hasText: '1 message queued' }).waitFor();
    // Reloaded with no network at all (the service worker's fetch fails too): the page, its history and the
    // queued send come from the browser's storage.
    await a.reload();
    await a.locator('#banner', { hasText: '1 message queued' }).waitFor();
    await a.click('li[data-conv="wc-eve"]');
    expect(await a.locator('.msg.mine').allTextContents()).toEqual([expect.stringContaining('before the trip'), expect.stringContaining('typed in the tunnel')]);
    expect(await tick(a, 'typed in the tunnel').getAttribute('data-tick')).toBe('pending');
    expect(await a.locator('#status').textContent()).not.toBe('open');
    // Typed on the page that opened offline (its first connect failed, so the SDK is stopped until it retries).
    await a.locator('#status', { hasText: /^closed$/ }).waitFor();
    await a.fill('#text', 'and one more');
    await a.press('#text', 'Enter');

    // The network returns: the page connects by itself and the sends go out, once each, in order.
    await ca.setOffline(false);
    await a.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
    await b.click('li[data-conv="wc-dora"]');
    await b.locator('.msg.theirs', { hasText: 'typed in the tunnel' }).waitFor({ timeout: 30_000 });
    await b.locator('.msg.theirs', { hasText: 'and one more' }).waitFor({ timeout: 30_000 });
    await tick(a, 'and one more').and(a.locator('[data-tick="read"]')).waitFor();
    await a.locator('#banner').waitFor({ state: 'hidden' });
    expect(await b.locator('.msg.theirs').allTextContents()).toEqual(['before the trip', 'typed in the tunnel', 'and one more'].map((t) => expect.stringContaining(t)));
    await ca.close();
    await cb.close();
  }, 120_000);

  it('a browser with an older page\'s data: its localStorage history moves into the SDK store, whose database gains the history rows', async () => {
    needBrowser();
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${origin}/`);
    // What the previous web chat left: its device id, its history in localStorage, the SDK database at version 1.
    await page.evaluate(`(async () => {
      localStorage.setItem('webchat.device.wc-old', 'web-old1');
      localStorage.setItem('webchat.history.wc-old', JSON.stringify([{ id: 'wc-zed', kind: 'dm', name: 'wc-zed', unread: 0,
        msgs: [{ id: 'wc-zed:1', msg: 'wc-zed:1', from: 'wc-zed', text: 'from the old page', ts: 1 }] }]));
      await new Promise((resolve, reject) => {
        const r = indexedDB.open('iris-client-web-old1', 1);
        r.onupgradeneeded = () => { for (const s of ['meta', 'outbox', 'unhandled']) r.result.createObjectStore(s); };
        r.onsuccess = () => { r.result.close(); resolve(null); };
        r.onerror = () => reject(r.error);
      });
    })()`);
    await page.goto(`${origin}/?user=wc-old`);
    await page.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
    await page.click('li[data-conv="wc-zed"]');
    await page.locator('.msg.theirs', { hasText: 'from the old page' }).waitFor();
    expect(await page.evaluate("localStorage.getItem('webchat.history.wc-old')")).toBeNull();
    await page.reload();
    await page.click('li[data-conv="wc-zed"]');
    await page.locator('.msg.theirs', { hasText: 'from the old page' }).waitFor();
    await ctx.close();
  });

  it('groups: ✓✓ and read from the members\' marks, a member added with the inline form gets what follows', async () => {
    needBrowser();
    const [ca, cb, cc] = await Promise.all([browser.newContext(), browser.newContext(), browser.newContext()]);
    const [a, b, c] = await Promise.all([open(ca, 'wc-gina'), open(cb, 'wc-hal'), open(cc, 'wc-ivy')]);
    await a.fill('#group-name', 'crew');
    await a.fill('#group-members', 'wc-hal');
    await a.click('#new-group button');
    await a.locator('#peer', { hasText: '# crew' }).waitFor();
    await a.fill('#text', 'crew hello');
    await a.press('#text', 'Enter');
    // On Hal's device but not read (he has not opened the group): ✓✓; read once he opens it.
    const crew = b.locator('li.conv', { hasText: '# crew' });
    await crew.locator('.unread', { hasText: '1' }).waitFor();
    await tick(a, 'crew hello').and(a.locator('[data-tick="delivered"]')).waitFor({ timeout: 30_000 });
    await crew.click();
    await b.locator('.msg.theirs', { hasText: 'crew hello' }).waitFor();
    await tick(a, 'crew hello').and(a.locator('[data-tick="read"]')).waitFor({ timeout: 30_000 });

    // Ivy is added with the form in the group's header (no prompt), and gets the join and what follows.
    await a.fill('#member-name', 'wc-ivy');
    await a.press('#member-name', 'Enter');
    await a.locator('.msg.system', { hasText: 'wc-ivy joined' }).waitFor();
    await a.fill('#text', 'welcome ivy');
    await a.press('#text', 'Enter');
    await c.locator('li.conv', { hasText: '# crew' }).click();
    await c.locator('.msg.theirs', { hasText: 'welcome ivy' }).waitFor();
    expect(await c.locator('.msg.theirs', { hasText: 'crew hello' }).count()).toBe(0); // before she joined
    // Read by both (Hal has the group open): read; ✓✓ alone would mean one of them had not.
    await tick(a, 'welcome ivy').and(a.locator('[data-tick="read"]')).waitFor({ timeout: 30_000 });
    await Promise.all([ca.close(), cb.close(), cc.close()]);
  }, 120_000);

  it('two users: send, receive, ticks, unread, typing, presence, offline and back, reload, groups', async () => {
    needBrowser();
    const ca = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const cb = await browser.newContext();
    const a = await open(ca, 'wc-alice');
    const b = await open(cb, 'wc-bob');

    // Alice opens a chat with Bob and sends; Bob has it unread until he opens it.
    await a.fill('#peer-name', 'wc-bob');
    await a.press('#peer-name', 'Enter');
    await a.fill('#text', 'hello bob');
    await a.press('#text', 'Enter');
    await b.locator('li[data-conv="wc-alice"] .unread', { hasText: '1' }).waitFor();
    await tick(a, 'hello bob').and(a.locator('[data-tick="delivered"]')).waitFor();
    expect(await tick(a, 'hello bob').textContent()).toBe('✓✓');
    await b.click('li[data-conv="wc-alice"]');
    await b.locator('.msg.theirs', { hasText: 'hello bob' }).waitFor();
    await tick(a, 'hello bob').and(a.locator('[data-tick="read"]')).waitFor();
    expect(await b.locator('li[data-conv="wc-alice"] .unread').count()).toBe(0);

    // Presence and typing.
    await a.locator('#peer-status', { hasText: 'online' }).waitFor();
    await b.locator('#text').pressSequentially('hi al', { delay: 20 });
    await a.locator('#peer-status', { hasText: 'typing…' }).waitFor();
    await b.press('#text', 'Enter');
    await a.locator('.msg.theirs', { hasText: 'hi al' }).waitFor();

    // Bob goes offline: the banner shows, his send waits queued, and goes out when he is back.
    await cb.setOffline(true);
    await b.locator('#banner').waitFor({ state: 'visible' });
    await b.fill('#text', 'sent while offline');
    await b.press('#text', 'Enter');
    await b.locator('#banner', { hasText: '1 message queued' }).waitFor({ timeout: 30_000 });
    expect(await tick(b, 'sent while offline').getAttribute('data-tick')).toBe('pending');
    await cb.setOffline(false);
    await a.locator('.msg.theirs', { hasText: 'sent while offline' }).waitFor({ timeout: 30_000 });
    await b.locator('#banner').waitFor({ state: 'hidden', timeout: 30_000 });
    await tick(b, 'sent while offline').and(b.locator('[data-tick="read"]')).waitFor();

    // A reload keeps the history (and its ticks).
    const before = await b.locator('.msg').allTextContents();
    await b.reload();
    await b.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
    await b.click('li[data-conv="wc-alice"]');
    expect(await b.locator('.msg').allTextContents()).toEqual(before);

    // Groups: create with a member, message, the member leaves.
    await a.fill('#group-name', 'team');
    await a.fill('#group-members', 'wc-bob');
    await a.click('#new-group button');
    await a.locator('#peer', { hasText: '# team' }).waitFor();
    await a.fill('#text', 'hi team');
    await a.press('#text', 'Enter');
    const team = b.locator('li.conv', { hasText: '# team' });
    await team.waitFor();
    await team.click();
    await b.locator('.msg.theirs', { hasText: 'hi team' }).waitFor();
    await b.fill('#text', 'thanks');
    await b.press('#text', 'Enter');
    await a.locator('.msg.theirs', { hasText: 'thanks' }).waitFor();
    // Alice back in the 1:1 chat: the group counts Bob's next line as unread; her new 1:1 message is delivered
    // (✓✓) but not read, since Bob's chat with her is not open.
    await a.click('li[data-conv="wc-bob"]');
    await b.fill('#text', 'see you at 5');
    await b.press('#text', 'Enter');
    await a.locator('li.conv', { hasText: '# team' }).locator('.unread', { hasText: '1' }).waitFor();
    await a.fill('#text', 'lunch tomorrow?');
    await a.press('#text', 'Enter');
    await tick(a, 'lunch tomorrow?').and(a.locator('[data-tick="delivered"]')).waitFor();
    if (process.env['IRIS_SCREENSHOT'] === '1') {
      await a.locator('li.conv .preview', { hasText: 'see you at 5' }).waitFor(); // Bob's typing in the group over
      await a.screenshot({ path: join(ROOT, 'docs', 'webchat.png') });
    }
    await b.click('#leave-group');
    await a.click('li.conv >> text=# team');
    await a.locator('.msg.system', { hasText: 'wc-bob left' }).waitFor();
    // A send the server refuses for good (Bob is no longer a member) is marked, not kept as waiting.
    await b.fill('#text', 'still here?');
    await b.press('#text', 'Enter');
    await tick(b, 'still here?').and(b.locator('[data-tick="failed"]')).waitFor();
    expect(await b.locator('#banner').textContent()).not.toContain('queued');

    await ca.close();
    await cb.close();
  }, 180_000);
});
