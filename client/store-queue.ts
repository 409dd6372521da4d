import { IrisError, errText } from './errors.js';
import type { ClientStore } from './store.js';

/**
 * The one way into the ClientStore. The store contract says calls come in order and never overlap, and the
 * inbox and outbox both write, so they share one queue. While nothing is in flight a synchronous store (memory,
 * Node file) is called synchronously: sends then go out in call order without waiting a tick.
 */
export class StoreQueue {
  private tail: Promise<void> = Promise.resolve();
  private inFlight = 0;

  constructor(
    readonly store: ClientStore,
    /** Where failed writes that nobody waits for are reported. */
    private readonly report: (e: IrisError) => void,
  ) {}

  /**
   * Runs `op` after the calls before it; then `done`, or `fail` with what it threw (default: reported as an
   * `internal` error). Synchronously when nothing is in flight and the store is synchronous.
   */
  run(op: (store: ClientStore) => void | Promise<void>, done: () => void = () => {}, fail?: (e: unknown) => void): void {
    const onFail = fail ?? ((e: unknown) => this.report(new IrisError('internal', `store: ${errText(e)}`)));
    let p: Promise<void> | null;
    try {
      p = this.runAsync(op);
    } catch (e) {
      onFail(e);
      return;
    }
    if (p === null) done();
    else p.then(done, onFail);
  }

  /** Like run, for callers that wait: null when the call completed synchronously, else its promise. */
  runAsync(op: (store: ClientStore) => void | Promise<void>): Promise<void> | null {
    if (this.inFlight === 0) {
      const r = op(this.store);
      if (!(r instanceof Promise)) return null;
      return this.track(r);
    }
    return this.track(this.tail.then(() => op(this.store)));
  }

  private track(p: Promise<void>): Promise<void> {
    this.inFlight++;
    const t = p.finally(() => {
      this.inFlight--;
    });
    this.tail = t.catch(() => {});
    return t;
  }
}
