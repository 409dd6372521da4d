import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Gives a process's V8 heap back to the system once it goes quiet after a burst.
 *
 * Why: under sustained allocation in which most objects survive (a burst of connects: every socket, mailbox
 * and parser stays), V8 doubles the young generation up to its cap (2 x IRIS_SEMI_SPACE_MB) and leaves old
 * space with free pages, and it only hands them back in a *memory-reducing* GC. Its own memory reducer
 * rarely runs one in a server that has gone idle (no allocation means no GC to start it from), so a worker
 * that took 3,000 connections in a burst kept ~16 MiB more young generation and a few MiB of empty old-space
 * pages for good: at 20,000 connections on 6 workers, about half of the measured memory per connection
 * (docs/BENCHMARKS.md "Idle memory per connection"). A regular full GC shrinks the young generation's size
 * but keeps its pages pooled (RSS unchanged, measured); only the memory-reducing collection releases them.
 *
 * So: when the process has been quiet (few events, counted by the caller) for `idleMs` and its heap grew
 * since the last trim, run one memory-reducing full GC (V8's `CollectAllAvailableGarbage`, what it does on a
 * low-memory notification). It blocks the event loop (~10-60 ms for a worker with a few thousand
 * connections), which is why it waits for a quiet process and never runs more often than 1/50 of the time.
 * A busy process never trims: its young generation stays at the size that keeps its GC cheap.
 */

type Gc = (options: { type: 'major'; execution: 'sync'; flavor: 'last-resort' }) => void;

let gcFn: Gc | null | undefined;

/**
 * V8's gc() with options, without exposing `gc` to the application's own global scope: the flag only takes
 * effect for contexts created after it, so the function is taken from a fresh one.
 */
function memoryReducingGc(): Gc | null {
  if (gcFn !== undefined) return gcFn;
  try {
    setFlagsFromString('--expose-gc');
    const f: unknown = runInNewContext('typeof gc === "function" ? gc : null');
    gcFn = typeof f === 'function' ? (f as Gc) : null;
  } catch {
    gcFn = null;
  }
  return gcFn;
}

/** Committed bytes of the whole V8 heap and of its young generation. */
function heapCommitted(): { total: number; young: number } {
  let total = 0;
  let young = 0;
  for (const s of getHeapSpaceStatistics()) {
    total += s.space_size;
    if (s.space_name === 'new_space') young = s.space_size;
  }
  return { total, young };
}

/** Growth of the committed heap since the last trim that is worth a full GC. */
const GROWTH_BYTES = 4 * 1024 * 1024;
/** Trims take at most this share of the wall clock. */
const MAX_SHARE = 1 / 50;
const TICK_MS = 1000;

export interface TrimReport {
  /** Committed V8 heap before and after, bytes. */
  before: number;
  after: number;
  ms: number;
}

export class IdleTrim {
  private events = 0;
  private quietMs = 0;
  private base = heapCommitted();
  private notBefore = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  /**
   * @param idleMs    how long the process must have been quiet; 0 turns trimming off
   * @param quietEvents a tick (1 s) with at most this many events counts as quiet
   */
  constructor(
    private readonly idleMs: number,
    private readonly onTrim: (r: TrimReport) => void = () => undefined,
    private readonly quietEvents = 10,
  ) {}

  /** Call once the process has started: start-up (loading and compiling modules, opening storage) is its first burst. */
  start(): this {
    if (this.idleMs <= 0 || this.timer !== null || memoryReducingGc() === null) return this;
    this.trim();
    this.notBefore = 0;
    this.timer = setInterval(() => this.tick(), TICK_MS);
    // Never the reason a process stays alive.
    this.timer.unref();
    return this;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** Something happened (a connection, a frame, a hand-over): the process is not idle. */
  note(n = 1): void {
    this.events += n;
  }

  private tick(): void {
    const quiet = this.events <= this.quietEvents;
    this.events = 0;
    this.quietMs = quiet ? this.quietMs + TICK_MS : 0;
    if (this.quietMs < this.idleMs || Date.now() < this.notBefore) return;
    const now = heapCommitted();
    if (Math.max(now.total - this.base.total, now.young - this.base.young) < GROWTH_BYTES) return;
    this.trim();
  }

  /** One memory-reducing GC now. */
  trim(): TrimReport | null {
    const gc = memoryReducingGc();
    if (gc === null) return null;
    const before = heapCommitted().total;
    const t0 = performance.now();
    gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
    const ms = performance.now() - t0;
    this.base = heapCommitted();
    this.quietMs = 0;
    this.notBefore = Date.now() + Math.max(TICK_MS, ms / MAX_SHARE);
    const r = { before, after: this.base.total, ms };
    this.onTrim(r);
    return r;
  }
}
