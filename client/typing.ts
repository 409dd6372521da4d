import type { TypingState } from '../protocol/index.js';
import type { LinkSource } from './link.js';
import type { IrisTyping } from './types.js';

type Timer = ReturnType<typeof setTimeout>;

/** A timer that never keeps a Node process alive on its own (typing is never worth waiting for). */
function timer(fn: () => void, ms: number): Timer {
  const t = setTimeout(fn, ms);
  (t as { unref?: () => void }).unref?.();
  return t;
}

export interface TypingOptions {
  /** Least time between two `on` frames for one conversation (renewals). Default 1500 ms: a third of the server's default TTL. */
  renewMs: number;
  /** typingInput(): how long after the last keystroke the SDK sends `off` by itself. Default 3000 ms. */
  idleMs: number;
}

/**
 * Typing indicators on the client (PROTOCOL.md 8.8), both directions, in memory only.
 *
 * Out: `set` writes `on` at most every renewMs per conversation (the server coalesces renewals within half its
 * TTL anyway, so more would be wasted frames) and `off` only after an `on`. Nothing is queued while
 * disconnected: typing is ephemeral, and the server stops what a closed connection started.
 *
 * In: `typing_state` becomes a `typing` event on each change. An `on` that is not renewed within its `ttl`
 * turns into an `off` event here, whether or not the server's `off` ever arrives (a typer that crashed, a
 * connection lost on either side).
 */
export class TypingIndicators {
  /** conv -> when the last `on` was written. */
  private readonly sent = new Map<string, number>();
  /** conv -> typingInput's idle timer. */
  private readonly idle = new Map<string, Timer>();
  /** `${conv} ${from}` -> the expiry of an `on` shown to the app. */
  private readonly shown = new Map<string, Timer>();

  constructor(
    private readonly link: LinkSource,
    private readonly emit: (e: IrisTyping) => void,
    private readonly opts: TypingOptions,
  ) {}

  set(conv: string, on: boolean): void {
    const link = this.link.current();
    const now = Date.now();
    if (on) {
      const last = this.sent.get(conv);
      if (last !== undefined && now - last < this.opts.renewMs) return;
      if (link === null) return;
      this.sent.set(conv, now);
    } else {
      const t = this.idle.get(conv);
      if (t !== undefined) clearTimeout(t);
      this.idle.delete(conv);
      if (!this.sent.delete(conv) || link === null) return;
    }
    link.write({ t: 'typing', conv, on });
  }

  /** A keystroke in the conversation: `on` (renewed as needed), and `off` after idleMs without another. */
  input(conv: string): void {
    this.set(conv, true);
    const t = this.idle.get(conv);
    if (t !== undefined) clearTimeout(t);
    this.idle.set(conv, timer(() => this.set(conv, false), this.opts.idleMs));
  }

  /** The connection went down: the server stops what it started; the next `on` goes out at once. */
  down(): void {
    this.sent.clear();
  }

  frame(f: TypingState): void {
    const key = `${f.conv} ${f.from}`;
    const t = this.shown.get(key);
    if (t !== undefined) clearTimeout(t);
    if (f.on) {
      this.shown.set(key, timer(() => this.expire(key, f.conv, f.from), f.ttl));
      if (t === undefined) this.emit({ conv: f.conv, from: f.from, on: true });
      return;
    }
    if (t === undefined) return;
    this.shown.delete(key);
    this.emit({ conv: f.conv, from: f.from, on: false });
  }

  private expire(key: string, conv: string, from: string): void {
    this.shown.delete(key);
    this.emit({ conv, from, on: false });
  }

  /** The client closed: no more events, no more frames. */
  close(): void {
    for (const t of [...this.shown.values(), ...this.idle.values()]) clearTimeout(t);
    this.shown.clear();
    this.idle.clear();
    this.sent.clear();
  }
}
