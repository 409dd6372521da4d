/**
 * In a browser, a page can be closed or reloaded at any moment after it is hidden, and timers stop running:
 * `onHide` runs as soon as the page is hidden (the client sends its pending deliver_ack and writes deferred
 * store updates then, so a reload does not bring processed entries back from the server: they would be skipped
 * by the cursor, but only a durable store knows the cursor). Returns the function that detaches the listeners.
 * No-op outside browsers.
 */
export function attachPageHooks(onHide: () => void): () => void {
  const g = globalThis as {
    addEventListener?: (type: string, fn: () => void) => void;
    removeEventListener?: (type: string, fn: () => void) => void;
    document?: { visibilityState?: string };
  };
  if (typeof g.addEventListener !== 'function' || typeof g.removeEventListener !== 'function' || g.document === undefined) return () => {};
  const hidden = (): void => {
    if (g.document?.visibilityState === 'visible') return;
    onHide();
  };
  g.addEventListener('pagehide', hidden);
  g.addEventListener('visibilitychange', hidden);
  return () => {
    g.removeEventListener?.('pagehide', hidden);
    g.removeEventListener?.('visibilitychange', hidden);
  };
}
