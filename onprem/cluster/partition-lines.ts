/**
 * A node's partition events of one event-loop turn as ONE log line per kind (`cluster: partitions 0-5, 9 lost
 * (expired); ...`). A lease session that ends loses every partition of the node at once, and a start takes
 * hundreds: one line each hit the log's rate limit (onprem/log.ts), which then hid the rest, the warnings included.
 */
export type LineLevel = 'info' | 'warn';

export class PartitionLines {
  private readonly pending = new Map<string, { level: LineLevel; partitions: number[] }>();
  private scheduled = false;

  constructor(private readonly log: (level: LineLevel, message: string) => void) {}

  /** `what` ends the line after the partition list, e.g. 'lost (expired); their users reconnect to the new owner'. */
  add(level: LineLevel, what: string, partition: number): void {
    const key = `${level}\u0000${what}`;
    const e = this.pending.get(key);
    if (e) e.partitions.push(partition);
    else this.pending.set(key, { level, partitions: [partition] });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    for (const [key, { level, partitions }] of this.pending) {
      const what = key.slice(key.indexOf('\u0000') + 1);
      this.log(level, `cluster: ${partitions.length === 1 ? 'partition' : `${partitions.length} partitions`} ${ranges(partitions)} ${what}`);
    }
    this.pending.clear();
  }
}

/** 0,1,2,5,7,8 -> "0-2, 5, 7-8". */
export function ranges(partitions: number[]): string {
  const xs = [...new Set(partitions)].sort((a, b) => a - b);
  const out: string[] = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    out.push(j === i ? String(xs[i]) : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.join(', ');
}
