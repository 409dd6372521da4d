/**
 * report.html (issue 12, "load generator for people"): one self-contained file a browser opens from disk or
 * an attachment, with the plots and the tables of a bench run. The SVGs and the CSS are inline and nothing
 * is fetched, so the file can be mailed or archived alone.
 *
 * The tables are summary.md's own (converted, not recomputed), so the HTML and the markdown never disagree;
 * one table is added from the runs: the latency percentiles and the CPU of every phase.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunRecord } from './report.js';

export interface HtmlInput {
  title: string;
  /** summary.md as written next to it. */
  summaryMd: string;
  runs: RunRecord[];
  /** Plot file names (for the headings) and their SVG text. */
  plots: { name: string; svg: string }[];
}

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Escapes, then renders `code` spans (the only inline markup summary.md uses). */
function inline(s: string): string {
  return esc(s).replace(/`([^`]+)`/g, '<code>$1</code>');
}

/** Cells of a markdown table row; `\|` is a literal bar inside a cell. */
function cells(row: string): string[] {
  const inner = row.trim().replace(/^\|/, '').replace(/\|$/, '');
  return inner.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

const numeric = (s: string) => /^-?[\d.,]+(x| ms| KiB)?$/.test(s);

function table(rows: string[]): string {
  const [head, ...rest] = rows;
  const body = rest.filter((r) => !/^\|[\s|:-]+\|$/.test(r.trim()));
  const out = ['<table>', `<thead><tr>${cells(head!).map((c) => `<th>${inline(c)}</th>`).join('')}</tr></thead>`, '<tbody>'];
  for (const r of body) {
    out.push(`<tr>${cells(r).map((c) => `<td${numeric(c) ? ' class="n"' : c === 'NO' || c.startsWith('fail') ? ' class="bad"' : ''}>${inline(c)}</td>`).join('')}</tr>`);
  }
  out.push('</tbody>', '</table>');
  return out.join('\n');
}

/** summary.md's tables without a heading of their own, named by their first three columns. */
const TABLE_HEADINGS: Record<string, string> = {
  'run|workers|conns': 'Runs (max mode: the highest passing step)',
  'run|workers|connections held': 'Idle memory',
  'system under test|baseline|metric': 'Ratio to the baseline',
  'target|wanted|measured': 'Targets',
};

/** The markdown summary.md is written in (headings, bullet lists, tables, paragraphs) as HTML. */
export function markdownToHtml(md: string): string {
  const out: string[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; ) {
    const line = lines[i]!;
    if (line.trim() === '') {
      i++;
    } else if (line.startsWith('|')) {
      const rows: string[] = [];
      while (i < lines.length && lines[i]!.startsWith('|')) rows.push(lines[i++]!);
      const heading = TABLE_HEADINGS[cells(rows[0]!).slice(0, 3).join('|')];
      if (heading) out.push(`<h3>${heading}</h3>`);
      out.push(table(rows));
    } else if (line.startsWith('- ')) {
      out.push('<ul>');
      while (i < lines.length && lines[i]!.startsWith('- ')) out.push(`<li>${inline(lines[i++]!.slice(2))}</li>`);
      out.push('</ul>');
    } else {
      const h = /^(#{1,4}) (.*)$/.exec(line);
      // "Steps of <run>:" and "Worker kill in <run> ...:" introduce the block after them: a heading.
      const intro = !h && line.endsWith(':') && (lines[i + 1] ?? '').trim() === '';
      out.push(h ? `<h${h[1]!.length + 1}>${inline(h[2]!)}</h${h[1]!.length + 1}>` : intro ? `<h3>${inline(line.slice(0, -1))}</h3>` : `<p>${inline(line)}</p>`);
      i++;
    }
  }
  return out.join('\n');
}

/** An SVG file as an inline element: no XML declaration; namespaces are implied in HTML. */
export function inlineSvg(svg: string): string {
  return svg
    .replace(/^\s*<\?xml[^>]*\?>\s*/, '')
    .replace(/ xmlns(:\w+)?="[^"]*"/g, '')
    .trim();
}

/** Latency percentiles (send->deliver, ack, generator lag) and CPU of every phase of every load run. */
export function phaseTable(runs: RunRecord[]): string {
  const load = runs.filter((r) => r.result.mode !== 'memory' && r.result.phases.length > 0);
  if (load.length === 0) return '';
  const md = [
    '| run | step | offered/s | delivered/s | deliver p50 | p90 | p99 | p99.9 | max | ack p50 | ack p99 | lag p99 | server cores | client cores | verdict |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const r of load) {
    for (const s of r.result.phases) {
      const d = s.deliver;
      const verdict = s.pass === null ? '' : s.pass ? 'pass' : `fail: ${s.reasons.join('; ')}`;
      md.push(
        `| ${r.label} | ${s.phase} | ${s.offeredRate} | ${s.deliveredRate} | ${d.p50} | ${d.p90} | ${d.p99} | ${d.p999} | ${d.max} | ${s.ack ? s.ack.p50 : 'n/a'} | ${s.ack ? s.ack.p99 : 'n/a'} | ${s.lag.p99} | ${s.cpu.serverCores ?? '?'} | ${s.cpu.clientCores} | ${verdict} |`,
      );
    }
  }
  return markdownToHtml(md.join('\n'));
}

const CSS = `
body { font: 14px/1.45 Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1180px; padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; } h3 { font-size: 15px; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; } td.bad { color: #b00; font-weight: bold; }
tbody tr:nth-child(even) { background: #fafafa; }
code { background: #f3f3f3; padding: 1px 3px; border-radius: 3px; font-size: 12px; }
figure { margin: 12px 0 24px; } figcaption { color: #666; font-size: 12px; }
svg { max-width: 100%; height: auto; border: 1px solid #eee; }
nav a { margin-right: 12px; }
`;

export function htmlReport(i: HtmlInput): string {
  const plots = i.plots.map((p) => `<figure id="${esc(p.name)}">\n${inlineSvg(p.svg)}\n<figcaption>${esc(p.name)}</figcaption>\n</figure>`);
  const phases = phaseTable(i.runs);
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(i.title)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    '<nav><a href="#summary">summary</a><a href="#plots">plots</a>' + (phases ? '<a href="#phases">latency and CPU per step</a>' : '') + '</nav>',
    '<section id="summary">',
    markdownToHtml(i.summaryMd),
    '</section>',
    i.plots.length > 0 ? `<section id="plots">\n<h2>Plots</h2>\n${plots.join('\n')}\n</section>` : '',
    phases
      ? `<section id="phases">\n<h2>Latency percentiles and CPU per step</h2>\n<p>ms from the scheduled send time; CPU in cores busy during the window (server: every server process; clients: the load generator).</p>\n${phases}\n</section>`
      : '',
    '</body>',
    '</html>',
    '',
  ].join('\n');
}

/** Writes report.html into `dir` from summary.md's text and the plot files already written there. */
export function writeHtmlReport(dir: string, title: string, summaryMd: string, runs: RunRecord[], plotNames: string[]): string {
  const plots = plotNames.map((name) => ({ name, svg: readFileSync(join(dir, name), 'utf8') }));
  writeFileSync(join(dir, 'report.html'), htmlReport({ title, summaryMd, runs, plots }));
  return 'report.html';
}
