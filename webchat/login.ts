/**
 * The web chat's sign-in (README "Web chat"): the user name (and, in production, a token the app issued), the
 * development token endpoint, and this browser's device id per user.
 */

export const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** A dev token for `user`, or null when this server has no /dev/token (production). */
export async function devToken(user: string): Promise<string | null> {
  const r = await fetch(`/dev/token?user=${encodeURIComponent(user)}`, { cache: 'no-store' });
  if (r.status === 404) return null;
  if (!r.ok) throw new Error(((await r.json()) as { message: string }).message);
  return ((await r.json()) as { token: string }).token;
}

export function tokenFn(me: string): () => Promise<string> {
  const k = `webchat.devtoken.${me}`;
  return async () => {
    try {
      const t = (await devToken(me)) ?? '';
      sessionStorage.setItem(k, t);
      return t;
    } catch {
      return sessionStorage.getItem(k) ?? 'offline';
    }
  };
}

export function deviceId(user: string): string {
  const k = `webchat.device.${user}`;
  let d = localStorage.getItem(k);
  if (!d) localStorage.setItem(k, (d = `web-${crypto.randomUUID().slice(0, 8)}`));
  return d;
}

export function login(start: (user: string) => Promise<void>): void {
  // The page's own files, kept for a reload or a visit without a network (the chat then opens and waits).
  void navigator.serviceWorker?.register('/sw.js').catch(() => {});
  const saved = localStorage.getItem('webchat.user');
  const user = $<HTMLInputElement>('user');
  const tok = $<HTMLInputElement>('token');
  if (saved) user.value = saved;
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = user.value.trim();
    void (async () => {
      try {
        const dev = tok.value.trim() ? null : await devToken(name).catch(() => null);
        if (!dev && !tok.value.trim()) {
          $('token-row').hidden = false;
          $('login-error').textContent = 'This server has no development tokens: paste a token your app issued.';
          return;
        }
        localStorage.setItem('webchat.user', name);
        if (!dev) sessionStorage.setItem(`webchat.token.${name}`, tok.value.trim());
        void start(name);
      } catch (e) {
        $('login-error').textContent = (e as Error).message;
      }
    })();
  });
  $('login').hidden = false;
  const why = sessionStorage.getItem('webchat.why');
  if (why) {
    sessionStorage.removeItem('webchat.why');
    $('login-error').textContent = why;
    $('token-row').hidden = false;
  }
  // Opened with ?user=: straight in (dev mode), as the README's link and the browser test do.
  const q = new URLSearchParams(location.search).get('user');
  // This tab's user signed in before (a reload): straight back in, network or not; the token comes at connect.
  // Without ?user= (another tab) the form is shown, so two tabs are never the same device.
  if (saved && q === saved) return void start(saved);
  if (q) {
    user.value = q;
    $<HTMLButtonElement>('login-go').click();
  }
}
