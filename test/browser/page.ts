/**
 * The app inside the browser test's page, bundled with esbuild. It is a tiny chat device on the SDK with its
 * DEFAULT store (IndexedDB in a browser), configured by the query string (url, token, device). Everything the
 * app is given is appended to localStorage synchronously, so a reload right after a handler ran cannot hide
 * what the app saw:
 *   log: ["msg <text>", "rec <text>", ...]   'message' and 'recovered' events, in order
 *   receipts: ["<by> <msg>", ...]            'receipt' events, in order
 *   reads: ["<conv> <msg>", ...]             'readState' events, in order
 * The test drives it through window.app.
 */
import { IrisClient, type IrisError } from '../../client/index.js';

interface PageGlobals {
  location: { search: string };
  localStorage: { getItem(k: string): string | null; setItem(k: string, v: string): void };
  indexedDB: {
    open(name: string): {
      result: {
        objectStoreNames: { contains(s: string): boolean };
        transaction(s: string): {
          objectStore(s: string): {
            getAllKeys(): { result: unknown[]; onsuccess: (() => void) | null };
            get(k: string): { result: unknown; onsuccess: (() => void) | null };
          };
        };
        close(): void;
      };
      onsuccess: (() => void) | null;
      onerror: (() => void) | null;
    };
  };
  app: unknown;
}
const g = globalThis as unknown as PageGlobals;
const q = new URLSearchParams(g.location.search);
const device = q.get('device')!;

function append(key: string, line: string): void {
  const cur = JSON.parse(g.localStorage.getItem(key) ?? '[]') as string[];
  cur.push(line);
  g.localStorage.setItem(key, JSON.stringify(cur));
}

const client = new IrisClient({ url: q.get('url')!, token: q.get('token')!, device, reconnect: { baseMs: 50, maxMs: 500 } });
client.on('message', (m) => append('log', `msg ${m.text()}`));
client.on('recovered', (r) => {
  if (r.kind === 'message') append('log', `rec ${r.message.text()}`);
});
client.on('receipt', (r) => append('receipts', `${r.by} ${r.msg}`));
client.on('readState', (p) => append('reads', `${p.conv} ${p.msg}`));
const acked = new Set<string>();
client.on('ack', (a) => void acked.add(a.id));
let lastError: IrisError | null = null;
client.on('error', (e) => void (lastError = e));

// hold=1: the app does not connect (yet); its sends wait in the outbox.
const connected = (q.get('hold') === '1' ? new Promise<never>(() => {}) : client.connect()).then(
  () => 'open',
  (e: IrisError) => {
    lastError = e;
    return 'failed';
  },
);

/** Client ids of the sends in the IndexedDB outbox; null when the SDK keeps no outbox there. */
function storedOutbox(): Promise<string[] | null> {
  return new Promise((resolve, reject) => {
    const r = g.indexedDB.open(`iris-client-${device}`);
    r.onerror = () => reject(new Error('open failed'));
    r.onsuccess = () => {
      const db = r.result;
      if (!db.objectStoreNames.contains('outbox')) {
        db.close();
        return resolve(null);
      }
      const k = db.transaction('outbox').objectStore('outbox').getAllKeys();
      k.onsuccess = () => {
        db.close();
        resolve(k.result as string[]);
      };
    };
  });
}

/** A version the SDK kept in IndexedDB (meta 'receipts' or 'reads'), 0 if none. */
function storedReceipts(key = 'receipts'): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = g.indexedDB.open(`iris-client-${device}`);
    r.onerror = () => reject(new Error('open failed'));
    r.onsuccess = () => {
      const db = r.result;
      if (!db.objectStoreNames.contains('meta')) {
        db.close();
        return resolve(0);
      }
      const k = db.transaction('meta').objectStore('meta').get(key);
      k.onsuccess = () => {
        db.close();
        resolve(typeof k.result === 'number' ? k.result : 0);
      };
    };
  });
}

g.app = {
  receipts: () => JSON.parse(g.localStorage.getItem('receipts') ?? '[]') as string[],
  storedReceipts,
  reads: () => JSON.parse(g.localStorage.getItem('reads') ?? '[]') as string[],
  storedReads: () => storedReceipts('reads'),
  connected: () => connected,
  state: () => client.state,
  error: () => (lastError ? { code: lastError.code, status: lastError.status, reason: lastError.reason, message: lastError.message } : null),
  log: () => JSON.parse(g.localStorage.getItem('log') ?? '[]') as string[],
  /**
   * Calls send() n times (ids `<prefix><i>`) and resolves once every one is in IndexedDB or already acked
   * (at once if the SDK keeps no outbox in IndexedDB: then nothing more can make them survive a reload).
   */
  async sendMany(to: string, prefix: string, n: number): Promise<void> {
    const ids = Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    for (const id of ids) void client.send(to, id, { id }).catch(() => {});
    for (;;) {
      const keys = await storedOutbox();
      if (keys === null) return;
      const stored = new Set(keys);
      if (ids.every((id) => stored.has(id) || acked.has(id))) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  },
  pending: () => client.pending,
};
