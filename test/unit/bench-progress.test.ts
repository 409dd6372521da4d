import { describe, expect, it } from 'vitest';
import { bar, clock, doneFraction, etaMs, maxSteps, plainLine, ProgressView, ttyLine, type ProgressState } from '../../scripts/bench/progress.js';

/** The bench's progress line (issue 12): ETA arithmetic, the bar's width, and terminal vs log rendering. */

const state = (over: Partial<ProgressState> = {}): ProgressState => ({
  label: 'onprem w2 c20',
  run: 2,
  runs: 2,
  step: 1,
  steps: 1,
  bound: false,
  frac: 0.5,
  elapsedMs: 90_000,
  detail: '[onprem w2 c20]    3s  offered 400/s  sent 400/s  delivered 400/s  p99 2.10 ms  in-flight 3  errors 0/s (total 0)',
  ...over,
});

function sink(isTTY: boolean, columns = 120) {
  const out: string[] = [];
  return { out, stream: { isTTY, columns, write: (s: string) => out.push(s) } };
}

describe('bench progress', () => {
  it('extrapolates the ETA linearly from the share done', () => {
    // Half of run 2 of 2 done = 75 %: 90 s so far leaves 30 s.
    expect(doneFraction(state())).toBe(0.75);
    expect(etaMs(0.75, 90_000)).toBe(30_000);
    expect(etaMs(0.25, 10_000)).toBe(30_000);
    expect(etaMs(1, 10_000)).toBe(0);
    expect(etaMs(0, 10_000)).toBeNull();
    // Step 3 of at most 10 in run 1 of 2, 40 % into it: (2.4 / 10) / 2.
    expect(doneFraction(state({ run: 1, step: 3, steps: 10, frac: 0.4 }))).toBeCloseTo(0.12, 10);
    // A search past its estimate counts as its run done, never more.
    expect(doneFraction(state({ run: 1, step: 14, steps: 10, frac: 0.9 }))).toBe(0.5);
  });

  it('bounds the steps of a find-the-maximum search', () => {
    // 500 * 1.5^k <= 50,000: k = 0..11 (12 climbing steps), + 2 bisections + 1 past the maximum.
    expect(maxSteps({ startRate: 500, stepFactor: 1.5, maxRate: 50_000, bisect: 2, pastMax: 1 })).toBe(15);
    expect(maxSteps({ startRate: 1, stepFactor: 1.01, maxRate: 1e9, bisect: 0, pastMax: 0 }, 40)).toBe(40);
  });

  it('formats durations and the bar', () => {
    expect(clock(7_400)).toBe('7s');
    expect(clock(65_000)).toBe('1m05s');
    expect(clock(7_380_000)).toBe('2h03m');
    expect(clock(null)).toBe('?');
    expect(bar(0.5, 10)).toBe('[#####.....]');
    expect(bar(1.7, 4)).toBe('[####]');
    expect(bar(-1, 4)).toBe('[....]');
  });

  it('keeps the terminal line inside the width, with the bar, step and ETA first', () => {
    for (const cols of [70, 80, 200]) {
      const line = ttyLine(state(), cols);
      expect(line.length).toBeLessThan(cols);
      expect(line).toMatch(/^\[#+\.*\] run 2\/2 step 1\/1 75% elapsed 1m30s ETA 30s/);
    }
    // Narrow: no bar, the numbers first, still one line shorter than the terminal.
    expect(ttyLine(state(), 40)).toBe('run 2/2 step 1/1 75% elapsed 1m30s ETA '.slice(0, 39));
    expect(ttyLine(state(), 50).startsWith('run 2/2 step 1/1 75% elapsed 1m30s ETA 30s  [on')).toBe(true);
    expect(ttyLine(state(), 80).startsWith(`[${'#'.repeat(12)}${'.'.repeat(4)}]`)).toBe(true);
    expect(ttyLine(state({ step: 4, steps: 15, bound: true }), 200)).toContain('step 4/<=15');
    // Wide enough: the whole live detail is there.
    expect(ttyLine(state(), 300)).toContain('p99 2.10 ms  in-flight 3');
  });

  it('rewrites one line on a terminal and keeps it under the log lines', () => {
    const { out, stream } = sink(true, 100);
    const view = new ProgressView(stream);
    view.update(state());
    view.update(state({ frac: 0.9 }));
    view.log('[onprem w2 c20] phase 0: offered 400/s');
    view.clear();
    expect(out[0]).toBe(`\r\x1b[K${ttyLine(state(), 100)}`);
    expect(out.every((s) => !s.startsWith('\n'))).toBe(true);
    expect(out[2]).toBe(`\r\x1b[K[onprem w2 c20] phase 0: offered 400/s\n${ttyLine(state({ frac: 0.9 }), 100)}`);
    expect(out[3]).toBe('\r\x1b[K');
    // No newline from the updates themselves: the bar stays one line.
    expect(out.slice(0, 2).join('')).not.toContain('\n');
  });

  it('writes plain lines, one per update, when not a terminal (CI logs)', () => {
    const { out, stream } = sink(false);
    const view = new ProgressView(stream);
    view.update(state());
    view.log('a log line');
    view.clear();
    expect(out).toEqual([`${plainLine(state())}\n`, 'a log line\n']);
    expect(out.join('')).not.toContain('\r');
    expect(out.join('')).not.toContain('\x1b');
    expect(plainLine(state())).toBe(`${state().detail}  | run 2/2 step 1/1 75% elapsed 1m30s ETA 30s`);
  });
});
