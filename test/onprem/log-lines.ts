/**
 * The on-prem server's stderr: one JSON object per line (core/log-line.ts), the supervisor's and the workers'
 * alike; a worker's carries `worker`, the supervisor's does not. Returns the lines that are neither (a stack
 * trace, a stray console write).
 */
export function strayLines(lines: string[]): string[] {
  return lines.filter((l) => logLine(l) === null);
}

/** A JSON log line of the on-prem server (supervisor or worker), or null when `l` is not one. */
export function logLine(l: string): Record<string, unknown> | null {
  if (!l.startsWith('{')) return null;
  try {
    const o = JSON.parse(l) as Record<string, unknown>;
    return o['profile'] === 'onprem' && typeof o['ts'] === 'string' && typeof o['level'] === 'string' && typeof o['msg'] === 'string' ? o : null;
  } catch {
    return null;
  }
}

/** A worker's JSON log line, or null when `l` is not one. */
export function workerLine(l: string): Record<string, unknown> | null {
  const o = logLine(l);
  return o && typeof o['worker'] === 'number' ? o : null;
}

/** A supervisor's JSON log line (no `worker`), or null when `l` is not one. */
export function supervisorLine(l: string): Record<string, unknown> | null {
  const o = logLine(l);
  return o && !('worker' in o) ? o : null;
}

/**
 * The supervisor's lines in `output` as `level: msg` text, one per line, for tests that look for a message
 * (start-up errors, drain) without caring about the JSON around it.
 */
export function supervisorText(output: string): string {
  return output
    .split('\n')
    .map(supervisorLine)
    .filter((o) => o !== null)
    .map((o) => `${String(o['level'])}: ${String(o['msg'])}${typeof o['error'] === 'string' ? ` (${o['error']})` : ''}`)
    .join('\n');
}
