import { IndexedDbStore, globalIndexedDb } from './idb-store.js';
import { MemoryStore, type ClientStore } from './store.js';

/**
 * The store a client gets when the app names none: IndexedDB where it exists (browsers: entries handed out and
 * unacked sends survive a reload), else in memory (Node, Workers: pass a FileStore or your own for restarts).
 */
export function defaultStore(device: string): ClientStore {
  return globalIndexedDb() ? new IndexedDbStore({ name: `iris-client-${device}` }) : new MemoryStore();
}
