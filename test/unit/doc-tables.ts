/** Reading docs/PROTOCOL.md's tables, for the tests that hold them against the code. */

/** Rows (header first, separator dropped) of the table after `<!-- table:name -->`. */
export function parseTable(md: string, name: string): string[][] | null {
  const lines = md.split('\n');
  const at = lines.findIndex((l) => l.trim() === `<!-- table:${name} -->`);
  if (at < 0) return null;
  let i = at + 1;
  while (i < lines.length && lines[i]!.trim() === '') i++;
  const rows: string[][] = [];
  for (; i < lines.length && lines[i]!.trim().startsWith('|'); i++) {
    const l = lines[i]!.trim();
    if (/^\|[\s:|-]+\|$/.test(l)) continue;
    rows.push(l.slice(1, l.endsWith('|') ? -1 : undefined).split('|').map((c) => c.trim()));
  }
  return rows;
}

/** The content of a cell's first code span, or null. */
export function code(cell: string | undefined): string | null {
  const m = /`([^`]*)`/.exec(cell ?? '');
  return m ? m[1]! : null;
}
