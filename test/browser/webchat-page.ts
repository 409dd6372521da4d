import type { BrowserContext, Page } from 'playwright-core';

/** What both web chat tests (on-prem and wrangler dev) do with a page: open it signed in, and read a message's tick. */

/** A new page of the web chat at `origin`, signed in as `user` (dev token), once its socket is open. */
export async function openChat(ctx: BrowserContext, origin: string, user: string): Promise<Page> {
  const page = await ctx.newPage();
  await page.goto(`${origin}/?user=${user}`);
  await page.locator('#status', { hasText: /^open$/ }).waitFor({ timeout: 30_000 });
  return page;
}

/** The tick (✓ / ✓✓ / read) of the user's own message with `text`. */
export const tick = (page: Page, text: string) => page.locator('.msg.mine', { hasText: text }).locator('.tick');
