/**
 * The on-prem server's stderr: the supervisor's lines as text prefixed `iris-onprem`, the workers' as one JSON
 * object per line (core/log-line.ts). Returns the lines that are neither (a stack trace, a stray console write).
 */
export function strayLines(lines: string[]): string[] {
  return lines.filter((l) => !l.startsWith('iris-onprem') && workerLine(l) === null);
}

/** A worker's JSON log line, or null when `l` is not one. */
export function workerLine(l: string): Record<string, unknown> | null {
  if (!l.startsWith('{')) return null;
  try {
    const o = JSON.parse(l) as Record<string, unknown>;
    return o['profile'] === 'onprem' && typeof o['ts'] === 'string' && typeof o['level'] === 'string' && typeof o['msg'] === 'string' ? o : null;
  } catch {
    return null;
  }
}
