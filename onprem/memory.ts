import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Gives a process's V8 heap back to the system once it goes quiet after a burst.
 *
 * Why: under sustained allocation in which most objects survive (a burst of connects: every socket, mailbox
 * and parser stays), V8 doubles the young generation up to its cap (2 x IRIS_SEMI_SPACE_MB) and leaves old
 * space with free pages, and it only hands them back in a *memory-reducing* GC. A worker that took 3,000
 * connections in a burst kept ~16 MiB more young generation and several MiB of empty old-space pages for
 * good: at 20,000 connections on 6 workers, about half of the measured memory per connection
 * (docs/BENCHMARKS.md "Idle memory per connection"). A regular full GC shrinks the young generation's size
 * but keeps its pages pooled (RSS unchanged, measured); only the memory-reducing collection releases them.
 *
 * V8's own memory reducer does not help here: it judges idleness by the allocation rate sampled at the last
 * GCs, which were the burst's, and an idle process runs no GC to update it ("Memory reducer: high alloc",
 * --trace-memory-reducer, every 8 s for as long as we watched).
 *
 * So: when the process has allocated little (QUIET_BYTES per second, no GC) for `idleMs`, and its heap grew
 * since the last trim, run one memory-reducing full GC (V8's `CollectAllAvailableGarbage`, at least two
 * passes). It blocks the event loop (measured: 45-65 ms per worker at start, ~270 ms after a messaging run
 * with 1,000 users on this loaded 2-core VM), which is why it waits for a quiet process and never takes
 * more than 1/50 of the time. A busy process never trims: its young generation keeps the size that keeps
 * its scavenges cheap. Quiet is judged by allocation, not by counting events, so nothing is added to the
 * message path, and a worker whose many idle clients still send a few frames per second can still trim.
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
/** A second in which the JavaScript heap grew by less than this (and no GC ran) is quiet: ~100s of frames/s. */
const QUIET_BYTES = 512 * 1024;
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
  private used = getHeapStatistics().used_heap_size;
  private quietMs = 0;
  private base = heapCommitted();
  private notBefore = 0;
  private timer: ReturnType<typeof setInterval> | null = null;

  /** @param idleMs how long the process must have been quiet; 0 turns trimming off */
  constructor(
    private readonly idleMs: number,
    private readonly onTrim: (r: TrimReport) => void = () => undefined,
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

  private tick(): void {
    const used = getHeapStatistics().used_heap_size;
    // A drop means a GC ran: enough was allocated to fill the young generation.
    const quiet = used >= this.used && used - this.used < QUIET_BYTES;
    this.used = used;
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
    this.used = getHeapStatistics().used_heap_size;
    this.quietMs = 0;
    this.notBefore = Date.now() + Math.max(TICK_MS, ms / MAX_SHARE);
    const r = { before, after: this.base.total, ms };
    this.onTrim(r);
    return r;
  }
}
