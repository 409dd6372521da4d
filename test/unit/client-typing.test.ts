import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ClientFrame } from '../../protocol/index.js';
import { TypingIndicators } from '../../client/typing.js';
import type { IrisTyping } from '../../client/types.js';

/** The SDK's typing indicators (client/typing.ts): renewals throttled, nothing queued offline, expiry by itself. */
describe('client typing indicators', () => {
  let written: ClientFrame[];
  let events: IrisTyping[];
  let connected: boolean;
  let t: TypingIndicators;

  beforeEach(() => {
    vi.useFakeTimers();
    written = [];
    events = [];
    connected = true;
    const link = { gen: 1, write: (f: ClientFrame) => written.push(f) };
    t = new TypingIndicators({ current: () => (connected ? link : null) }, (e) => events.push(e), { renewMs: 1_500, idleMs: 3_000 });
  });
  afterEach(() => {
    t.close();
    vi.useRealTimers();
  });

  it('writes on at most every renewMs, off only after an on, and nothing while disconnected', () => {
    t.set('bob', false);
    t.set('bob', true);
    vi.advanceTimersByTime(1_000);
    t.set('bob', true);
    vi.advanceTimersByTime(500);
    t.set('bob', true);
    t.set('bob', false);
    t.set('bob', false);
    connected = false;
    t.set('carol', true);
    expect(written).toEqual([
      { t: 'typing', conv: 'bob', on: true },
      { t: 'typing', conv: 'bob', on: true },
      { t: 'typing', conv: 'bob', on: false },
    ]);
  });

  it('typingInput sends off by itself after the idle time', () => {
    t.input('bob');
    vi.advanceTimersByTime(2_000);
    t.input('bob');
    vi.advanceTimersByTime(2_999);
    expect(written.map((f) => (f as { on: boolean }).on)).toEqual([true, true]);
    vi.advanceTimersByTime(1);
    expect(written.map((f) => (f as { on: boolean }).on)).toEqual([true, true, false]);
  });

  it('an on becomes an off event after its ttl unless renewed; renewals and stray offs emit nothing', () => {
    t.frame({ t: 'typing_state', conv: 'bob', from: 'bob', on: false, ttl: 0 });
    t.frame({ t: 'typing_state', conv: 'bob', from: 'bob', on: true, ttl: 5_000 });
    vi.advanceTimersByTime(4_000);
    t.frame({ t: 'typing_state', conv: 'bob', from: 'bob', on: true, ttl: 5_000 });
    vi.advanceTimersByTime(4_999);
    expect(events).toEqual([{ conv: 'bob', from: 'bob', on: true }]);
    vi.advanceTimersByTime(1);
    expect(events).toEqual([{ conv: 'bob', from: 'bob', on: true }, { conv: 'bob', from: 'bob', on: false }]);
    t.frame({ t: 'typing_state', conv: 'bob', from: 'bob', on: true, ttl: 5_000 });
    t.frame({ t: 'typing_state', conv: 'bob', from: 'bob', on: false, ttl: 0 });
    expect(events.map((e) => e.on)).toEqual([true, false, true, false]);
  });
});
