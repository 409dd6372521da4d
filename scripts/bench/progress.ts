/**
 * The progress of a bench invocation (issue 12, "load generator for people"): on a terminal one line that
 * rewrites itself (a bar, run and step k/n, elapsed, ETA); elsewhere (CI logs, pipes) plain lines, one per
 * update, as before, so a log stays readable line by line.
 *
 * The ETA is a linear extrapolation over planned load time: a run of a fixed-rate mode is one step, a
 * find-the-maximum search is at most `maxSteps(...)` steps (it usually stops earlier, so there the ETA is an
 * upper bound and the step count reads "k/<=n"). Wall time spent outside the load windows (server start,
 * connecting, drains) is folded into the rate at which planned time is observed to pass.
 */

export interface PhaseStatus {
  label: string;
  /** 1-based step within the run, and the planned number of steps (an upper bound when `bound`). */
  step: number;
  steps: number;
  bound: boolean;
  /** How far through the current step's warm-up + window (0..1). */
  frac: number;
  /** The classic live line (offered, delivered, p99, in flight, errors). */
  detail: string;
}

export interface ProgressState extends PhaseStatus {
  /** 1-based run of the invocation and the number of runs planned. */
  run: number;
  runs: number;
  elapsedMs: number;
}

/** Steps a find-the-maximum search takes at most: the climb to the cap, the bisections, the steps past the knee. */
export function maxSteps(o: { startRate: number; stepFactor: number; maxRate: number; bisect: number; pastMax: number }, cap = 40): number {
  const climb = o.stepFactor > 1 && o.maxRate > o.startRate ? Math.floor(Math.log(o.maxRate / o.startRate) / Math.log(o.stepFactor)) + 1 : 1;
  return Math.min(cap, climb) + o.bisect + o.pastMax;
}

/** Share of the invocation's planned load done: every run counts `steps` units, a finished search all of them. */
export function doneFraction(s: Pick<ProgressState, 'run' | 'runs' | 'step' | 'steps' | 'frac'>): number {
  if (s.runs <= 0 || s.steps <= 0) return 0;
  const inRun = Math.min(s.steps, s.step - 1 + Math.min(1, Math.max(0, s.frac)));
  return Math.min(1, (s.run - 1 + inRun / s.steps) / s.runs);
}

/** Milliseconds left at the pace so far, or null before anything is done. */
export function etaMs(done: number, elapsedMs: number): number | null {
  if (!(done > 0) || elapsedMs <= 0) return null;
  return Math.max(0, Math.round((elapsedMs * (1 - Math.min(1, done))) / done));
}

/** 7s, 1m05s, 2h03m. */
export function clock(ms: number | null): string {
  if (ms === null) return '?';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** [#####.....] with `width` cells inside the brackets. */
export function bar(frac: number, width: number): string {
  const w = Math.max(1, width);
  const n = Math.round(Math.min(1, Math.max(0, frac)) * w);
  return `[${'#'.repeat(n)}${'.'.repeat(w - n)}]`;
}

/** The run/step/elapsed/ETA part, shared by both renderings. */
export function position(s: ProgressState): string {
  const done = doneFraction(s);
  const steps = `${s.bound ? '<=' : ''}${s.steps}`;
  return `run ${s.run}/${s.runs} step ${s.step}/${steps} ${Math.floor(done * 100)}% elapsed ${clock(s.elapsedMs)} ETA ${clock(etaMs(done, s.elapsedMs))}`;
}

/** The terminal line: bar, position, then as much of the live detail as fits in `columns`. */
export function ttyLine(s: ProgressState, columns: number): string {
  const cols = Math.max(20, columns);
  const pos = position(s);
  // The bar only where the position still fits next to it: on a narrow terminal the numbers matter more.
  const w = Math.min(30, Math.floor(cols / 5));
  const head = w >= 5 && w + 3 + pos.length < cols ? `${bar(doneFraction(s), w)} ${pos}` : pos;
  const line = `${head}  ${s.detail}`;
  // One column less than the width: a line that fills the last column wraps on some terminals.
  return line.length < cols ? line : line.slice(0, cols - 1);
}

/** The plain line (not a terminal): the live line as before, with the position appended. */
export function plainLine(s: ProgressState): string {
  return `${s.detail}  | ${position(s)}`;
}

export interface Out {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

/** Writes log lines and progress updates to one stream, keeping a terminal's bar on the last line. */
export class ProgressView {
  private shown = '';

  constructor(private readonly out: Out) {}

  get tty(): boolean {
    return this.out.isTTY === true;
  }

  log(line: string): void {
    if (!this.tty) {
      this.out.write(`${line}\n`);
      return;
    }
    // Clear the bar, print the line, put the bar back under it.
    this.out.write(`\r\x1b[K${line}\n${this.shown}`);
  }

  update(s: ProgressState): void {
    if (!this.tty) {
      this.out.write(`${plainLine(s)}\n`);
      return;
    }
    this.shown = ttyLine(s, this.out.columns ?? 100);
    this.out.write(`\r\x1b[K${this.shown}`);
  }

  /** Removes the bar (before the summary is printed). */
  clear(): void {
    if (this.tty && this.shown !== '') this.out.write('\r\x1b[K');
    this.shown = '';
  }
}
