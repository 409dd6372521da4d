/** A small typed event emitter that works the same in browsers, Node and Workers. */

export type Listener<T> = (value: T) => void | Promise<void>;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(fn as Listener<never>);
    return () => {
      set.delete(fn as Listener<never>);
    };
  }

  /** Adds a listener that runs at most once. */
  once<K extends keyof Events>(event: K, fn: Listener<Events[K]>): () => void {
    const off = this.on(event, (v) => {
      off();
      return fn(v);
    });
    return off;
  }

  count<K extends keyof Events>(event: K): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  /**
   * Calls every listener in order and waits for the ones that return a promise. Resolves with the errors
   * listeners threw (an empty array when none did); never rejects.
   */
  async emitAsync<K extends keyof Events>(event: K, value: Events[K]): Promise<unknown[]> {
    const errors: unknown[] = [];
    const set = this.listeners.get(event);
    if (!set) return errors;
    for (const fn of [...set]) {
      try {
        await (fn as Listener<Events[K]>)(value);
      } catch (e) {
        errors.push(e);
      }
    }
    return errors;
  }

  /** Calls every listener without waiting. Errors (sync or async) are handed to onError. */
  emit<K extends keyof Events>(event: K, value: Events[K], onError?: (e: unknown) => void): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        const r = (fn as Listener<Events[K]>)(value);
        if (r instanceof Promise) r.catch((e: unknown) => onError?.(e));
      } catch (e) {
        onError?.(e);
      }
    }
  }
}
