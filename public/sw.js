// The web chat's service worker (README "Web chat"): keeps the page's own three files so that a reload, or a
// visit, without a network still opens the chat, which then shows its history from IndexedDB, queues sends and
// connects when the network returns. Network first (a rebuilt chat.js is used at once), the kept copy when the
// network fails. Nothing else is touched: /dev/token and the WebSocket always go to the network.
const CACHE = 'iris-webchat-v1';
const SHELL = ['/', '/chat.js', '/chat.css'];

self.addEventListener('install', (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (ev) => {
  const url = new URL(ev.request.url);
  if (ev.request.method !== 'GET' || url.origin !== self.location.origin) return;
  const key = url.pathname === '/index.html' ? '/' : url.pathname;
  if (!SHELL.includes(key)) return;
  ev.respondWith(
    fetch(ev.request).then(
      (res) => {
        if (res.ok) {
          const copy = res.clone();
          ev.waitUntil(caches.open(CACHE).then((c) => c.put(key, copy)));
        }
        return res;
      },
      () => caches.open(CACHE).then((c) => c.match(key)).then((hit) => hit ?? Response.error()),
    ),
  );
});
