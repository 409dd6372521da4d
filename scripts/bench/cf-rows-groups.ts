/**
 * The group scenario of scripts/bench/cf-rows.ts (`--scenarios group`): what one group message costs on the
 * Cloudflare profile, counted on local workerd through the shards' own counters, summed over the GroupShard and
 * EVERY member's UserShard — the measurement behind the model of docs/ARCHITECTURE.md "Groups" (design B).
 *
 * For each size in --members: fresh users; the first --online share of them (at least 2) connect with one SDK
 * device each (real IrisClient over a real WebSocket through the edge Worker); member 0 creates the group with
 * all the others (offline ones included: their shards are told by groupNews); every online device sees the
 * create; one warm-up message. Then, counted:
 *
 *   live      --group-n messages at chat pace from rotating online senders: each is sent once the previous one
 *             reached every online member (the SDK's defaults: group_ack every 32 entries or 50 ms), and
 *             --group-gap-ms after that (a sparse chat: members report their marks at most once a second, so
 *             back to back messages share marks that messages a second apart do not)
 *   catch-up  every offline member connects (in batches of 16), pulls everything of its range and disconnects
 *
 * Reported per group message: for live, and for live + catch-up (the offline members' pulls amortized over the
 * messages, as the model amortized them). Not in it: group creation and the warm-up.
 */
import type { WebSocketConstructor } from '../../client/socket.js';
import { IrisClient } from '../../client/client.js';
import { MemoryStore } from '../../client/store.js';
import type { GroupShardStats } from '../../durable-objects/group-stats.js';
import type { ShardStats } from '../../durable-objects/stats.js';
import type { StatementTally } from '../../durable-objects/storage.js';
import { mintToken } from '../token.js';

export interface GroupBenchDeps {
  base: string;
  secret: string;
  prices: { doRequest: number; wsPerRequest: number; durationGbS: number; objectGb: number; rowWritten: number; rowRead: number };
  /** The counting socket of cf-rows.ts: frames each client wrote, by type. */
  socket: (wire: { out: Record<string, number>; in: number }) => WebSocketConstructor;
}

export interface GroupOptions {
  members: number[];
  /** Share of the members online with one device each (at least 2 are). */
  online: number;
  n: number;
  /** Pause after each message reached every online member (0: the next goes at once). */
  gapMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Member {
  readonly wire = { out: {} as Record<string, number>, in: 0 };
  readonly client: IrisClient;
  /** Highest group seq this device was given, and whether it saw the group's create. */
  seq = 0;
  created = false;
  private waiters: (() => void)[] = [];

  constructor(
    readonly user: string,
    d: GroupBenchDeps,
  ) {
    this.client = new IrisClient({
      url: `${d.base.replace(/^http/, 'ws')}/v1/connect`,
      token: () => mintToken(user, { secret: d.secret }),
      device: 'd1',
      store: new MemoryStore(),
      WebSocket: d.socket(this.wire),
      probeRefusals: false,
    });
    this.client.on('groupMessage', (m) => {
      this.seq = Math.max(this.seq, m.seq);
      this.wake();
    });
    this.client.on('groupEvent', (e) => {
      this.seq = Math.max(this.seq, e.seq);
      if (e.kind === 'create') this.created = true;
      this.wake();
    });
    this.client.on('error', (e) => console.error(`${user}: ${e.code}: ${e.message}`));
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  async until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.user}: timed out waiting for ${what} (at seq ${this.seq})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

// ------------------------------------------------------------------ counters

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: ${r.status} ${await r.text()} (is this the bench config, scripts/bench/wrangler.bench.toml?)`);
  return (await r.json()) as T;
}

interface Snapshot {
  group: GroupShardStats;
  users: ShardStats[];
}

async function snapshot(d: GroupBenchDeps, group: string, users: string[]): Promise<Snapshot> {
  const g = await getJson<GroupShardStats>(`${d.base}/bench/stats?group=${encodeURIComponent(group)}`);
  const u: ShardStats[] = [];
  // Sequential in small batches: 256 parallel fetches would be a load spike of their own on this box.
  for (let i = 0; i < users.length; i += 16) {
    u.push(...(await Promise.all(users.slice(i, i + 16).map((x) => getJson<ShardStats>(`${d.base}/bench/stats?user=${encodeURIComponent(x)}`)))));
  }
  return { group: g, users: u };
}

const activity = (s: Snapshot): string =>
  JSON.stringify([s.group.instance, s.group.sql, s.group.rpcIn, s.group.rpcOut, s.group.alarms, s.users.map((u) => [u.instance, u.sql, u.rpcIn, u.rpcOut, u.wsIn, u.wsOut, u.alarms])]);

/** Waits until none of these counters moved for quietMs, after minMs (the 1 s receipts row, the members' 1 s mark). */
async function settle(d: GroupBenchDeps, group: string, users: string[], minMs: number, quietMs = 1_200, maxMs = 30_000): Promise<void> {
  const start = Date.now();
  await sleep(minMs);
  let last = '';
  let since = Date.now();
  for (;;) {
    const key = activity(await snapshot(d, group, users));
    if (key !== last) {
      last = key;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    if (Date.now() - start > maxMs) throw new Error(`counters of group ${group} still moving after ${maxMs} ms`);
    await sleep(200);
  }
}

/** What changed between two snapshots, summed over the group shard and every member shard. */
export interface GroupDelta {
  groupRowsWritten: number;
  memberRowsWritten: number;
  groupRowsRead: number;
  memberRowsRead: number;
  commits: number;
  /** Calls received by the group shard (by op) and made by it to member shards (each billed on the member). */
  groupIn: Record<string, number>;
  groupOut: Record<string, number>;
  /** Other calls received by member shards (1:1 paths: receive, presence, watch...). */
  memberRpcIn: number;
  alarms: number;
  upgrades: number;
  wsOutFrames: number;
  handlerMs: number;
  databaseBytes: number;
  /** Frames the clients wrote, by type. */
  clientOut: Record<string, number>;
  statements: Record<string, StatementTally & { shard: string }>;
  /** Member shards evicted and rebuilt between the two snapshots (counted from their restart). */
  restarts: number;
}

const zero = <T extends Record<string, number>>(r: T): T => Object.fromEntries(Object.keys(r).map((k) => [k, 0])) as T;

function delta(a: Snapshot, b: Snapshot): Omit<GroupDelta, 'clientOut'> {
  if (a.group.instance !== b.group.instance) throw new Error('the group shard restarted during the scenario: its counters are incomplete');
  const sum = (o: Record<string, number>, p: Record<string, number>) => Object.fromEntries(Object.keys(o).map((k) => [k, o[k]! - (p[k] ?? 0)]));
  const out: Omit<GroupDelta, 'clientOut'> = {
    groupRowsWritten: b.group.sql.rowsWritten - a.group.sql.rowsWritten,
    memberRowsWritten: 0,
    groupRowsRead: b.group.sql.rowsRead - a.group.sql.rowsRead,
    memberRowsRead: 0,
    commits: b.group.sql.commits - a.group.sql.commits,
    groupIn: sum(b.group.rpcIn, a.group.rpcIn),
    groupOut: sum(b.group.rpcOut, a.group.rpcOut),
    memberRpcIn: 0,
    alarms: b.group.alarms - a.group.alarms,
    upgrades: 0,
    wsOutFrames: 0,
    handlerMs: b.group.handlerMs - a.group.handlerMs,
    databaseBytes: b.group.databaseBytes - a.group.databaseBytes,
    statements: {},
    restarts: 0,
  };
  tally(a.group.statements, b.group.statements, 'group', out.statements);
  b.users.forEach((u, i) => {
    let p = a.users[i]!;
    if (p.instance !== u.instance) {
      // workerd evicts an object idle for ~10 s: an offline member's shard, which a group message does not touch
      // (design B), while the others are busy. Its counters start again at zero, so everything since the restart
      // is in `u`; what it did before the eviction is lost, and an object is evicted only after doing nothing.
      out.restarts++;
      p = { ...u, sql: { statements: 0, rowsRead: 0, rowsWritten: 0, commits: 0 }, rpcIn: zero(u.rpcIn), rpcOut: zero(u.rpcOut), wsIn: 0, wsOut: 0, upgrades: 0, alarms: 0, handlerMs: 0, databaseBytes: p.databaseBytes };
      delete p.statements;
    }
    out.memberRowsWritten += u.sql.rowsWritten - p.sql.rowsWritten;
    out.memberRowsRead += u.sql.rowsRead - p.sql.rowsRead;
    out.commits += u.sql.commits - p.sql.commits;
    out.memberRpcIn += Object.values(u.rpcIn).reduce((x, y) => x + y, 0) - Object.values(p.rpcIn).reduce((x, y) => x + y, 0);
    out.alarms += u.alarms - p.alarms;
    out.upgrades += u.upgrades - p.upgrades;
    out.wsOutFrames += u.wsOut - p.wsOut;
    out.handlerMs += u.handlerMs - p.handlerMs;
    out.databaseBytes += u.databaseBytes - p.databaseBytes;
    tally(p.statements, u.statements, 'member', out.statements);
  });
  return out;
}

function tally(before: Record<string, StatementTally> | undefined, after: Record<string, StatementTally> | undefined, shard: string, into: GroupDelta['statements']): void {
  for (const [q, t] of Object.entries(after ?? {})) {
    const p = before?.[q];
    const k = `${shard}\u0000${q}`;
    const x = into[k] ?? { calls: 0, rowsRead: 0, rowsWritten: 0, shard };
    x.calls += t.calls - (p?.calls ?? 0);
    x.rowsRead += t.rowsRead - (p?.rowsRead ?? 0);
    x.rowsWritten += t.rowsWritten - (p?.rowsWritten ?? 0);
    if (x.calls > 0) into[k] = x;
  }
}

function addDelta(a: GroupDelta, b: GroupDelta): GroupDelta {
  const rec = (x: Record<string, number>, y: Record<string, number>) => {
    const o = { ...x };
    for (const [k, v] of Object.entries(y)) o[k] = (o[k] ?? 0) + v;
    return o;
  };
  const statements = { ...a.statements };
  for (const [k, t] of Object.entries(b.statements)) {
    const x = statements[k];
    statements[k] = x ? { shard: x.shard, calls: x.calls + t.calls, rowsRead: x.rowsRead + t.rowsRead, rowsWritten: x.rowsWritten + t.rowsWritten } : t;
  }
  return {
    groupRowsWritten: a.groupRowsWritten + b.groupRowsWritten,
    memberRowsWritten: a.memberRowsWritten + b.memberRowsWritten,
    groupRowsRead: a.groupRowsRead + b.groupRowsRead,
    memberRowsRead: a.memberRowsRead + b.memberRowsRead,
    commits: a.commits + b.commits,
    groupIn: rec(a.groupIn, b.groupIn),
    groupOut: rec(a.groupOut, b.groupOut),
    memberRpcIn: a.memberRpcIn + b.memberRpcIn,
    alarms: a.alarms + b.alarms,
    upgrades: a.upgrades + b.upgrades,
    wsOutFrames: a.wsOutFrames + b.wsOutFrames,
    handlerMs: a.handlerMs + b.handlerMs,
    databaseBytes: a.databaseBytes + b.databaseBytes,
    clientOut: rec(a.clientOut, b.clientOut),
    statements,
    restarts: a.restarts + b.restarts,
  };
}

function wireDelta(ms: Member[], before: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  ms.forEach((m, i) => {
    for (const [t, x] of Object.entries(m.wire.out)) out[t] = (out[t] ?? 0) + x - (before[i]?.[t] ?? 0);
  });
  for (const t of Object.keys(out)) if (out[t] === 0) delete out[t];
  return out;
}

// ------------------------------------------------------------------ the scenario

export interface GroupResult {
  members: number;
  online: number;
  messages: number;
  wallMs: number;
  gapMs: number;
  live: GroupDelta;
  catchUp: GroupDelta;
}

export async function groupScenario(d: GroupBenchDeps, size: number, o: GroupOptions): Promise<GroupResult> {
  const tag = `${size}-${process.pid}-${Date.now().toString(36)}`;
  const group = `g-${tag}`;
  const users = Array.from({ length: size }, (_, i) => `gm${i}-${tag}`);
  const k = Math.min(size, Math.max(2, Math.round(size * o.online)));
  const online = users.slice(0, k).map((u) => new Member(u, d));
  const offline = users.slice(k);
  const connected: Member[] = [...online];
  try {
    await Promise.all(online.map((m) => m.client.connect()));
    const admin = online[0]!;
    await admin.client.createGroup('bench', users.slice(1), { group });
    await Promise.all(online.map((m) => m.until(() => m.created, 'the group create')));
    const warm = await admin.client.sendToGroup(group, 'warm-up');
    await Promise.all(online.map((m) => m.until(() => m.seq >= warm.seq, 'the warm-up')));
    // Offline members' shards were told of the group (groupNews, retried until stored): wait for that too.
    await settle(d, group, users, 2_500);

    const s0 = await snapshot(d, group, users);
    const w0 = online.map((m) => ({ ...m.wire.out }));
    const t0 = Date.now();
    let head = warm.seq;
    for (let i = 0; i < o.n; i++) {
      const sender = online[i % k]!;
      head = (await sender.client.sendToGroup(group, `group message ${i}: about the size of a short chat line`)).seq;
      const h = head;
      await Promise.all(online.map((m) => (m === sender ? undefined : m.until(() => m.seq >= h, `seq ${h}`))));
      if (o.gapMs > 0) await sleep(o.gapMs);
    }
    const wallMs = Date.now() - t0;
    await settle(d, group, users, 2_500);
    const s1 = await snapshot(d, group, users);
    const live: GroupDelta = { ...delta(s0, s1), clientOut: wireDelta(online, w0) };

    // Catch-up: every offline member comes back once, takes everything, leaves.
    // Each batch's shards are read as soon as they are quiet: idle for ~10 s, workerd evicts them, and an evicted
    // object's counters are gone (the final snapshot would see a fresh instance and miss the whole catch-up).
    const late: Member[] = [];
    const done = new Map<string, ShardStats>();
    for (let i = 0; i < offline.length; i += 16) {
      const names = offline.slice(i, i + 16);
      const batch = names.map((u) => new Member(u, d));
      late.push(...batch);
      connected.push(...batch);
      await Promise.all(batch.map((m) => m.client.connect()));
      await Promise.all(batch.map((m) => m.until(() => m.seq >= head, `catch-up to seq ${head}`)));
      await Promise.all(batch.map((m) => m.client.close()));
      await settle(d, group, names, 300, 600);
      const after = await snapshot(d, group, names);
      names.forEach((u, j) => done.set(u, after.users[j]!));
    }
    await settle(d, group, online.map((m) => m.user), 2_500);
    const s2 = await snapshot(d, group, users);
    s2.users = s2.users.map((u, j) => done.get(users[j]!) ?? u);
    const catchUp: GroupDelta = { ...delta(s1, s2), clientOut: wireDelta(late, []) };
    return { members: size, online: k, messages: o.n, wallMs, gapMs: o.gapMs, live, catchUp };
  } finally {
    await Promise.all(connected.map((m) => m.client.close().catch(() => {})));
  }
}

// ------------------------------------------------------------------ report

const f = (x: number, p = 2) => x.toFixed(p);
const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

/** Billed DO requests: calls to the group + the group's calls to members + members' other calls + alarms + upgrades + WS in / 20. */
export function requests(x: GroupDelta, wsPerRequest: number): number {
  return total(x.groupIn) + total(x.groupOut) + x.memberRpcIn + x.alarms + x.upgrades + total(x.clientOut) / wsPerRequest;
}

export function dollars(x: GroupDelta, m: number, p: GroupBenchDeps['prices']): { requests: number; rowsWritten: number; rowsRead: number; duration: number; total: number } {
  const req = (requests(x, p.wsPerRequest) / m) * p.doRequest;
  const rw = ((x.groupRowsWritten + x.memberRowsWritten) / m) * p.rowWritten;
  const rr = ((x.groupRowsRead + x.memberRowsRead) / m) * p.rowRead;
  const dur = (x.handlerMs / 1000 / m) * p.objectGb * p.durationGbS;
  return { requests: req, rowsWritten: rw, rowsRead: rr, duration: dur, total: req + rw + rr + dur };
}

export function groupTable(results: GroupResult[], p: GroupBenchDeps['prices']): string {
  const cols = results.flatMap((r) => [
    { r, label: `${r.members} (${r.online} on) live`, x: r.live },
    { r, label: `${r.members} + catch-up`, x: addDelta(r.live, r.catchUp) },
  ]);
  type Col = (typeof cols)[number];
  const rows: [string, (c: Col) => string][] = [
    ['group messages (N)', (c) => String(c.r.messages)],
    ['member shards evicted meanwhile (idle; counted from their restart)', (c) => String(c.x.restarts)],
    ['wall time of the live phase (ms)', (c) => String(c.r.wallMs)],
    ['pause after each message (ms)', (c) => String(c.r.gapMs)],
    ['**SQL rows written / msg**', (c) => `**${f((c.x.groupRowsWritten + c.x.memberRowsWritten) / c.r.messages)}**`],
    ['  group shard / member shards', (c) => `${f(c.x.groupRowsWritten / c.r.messages)} / ${f(c.x.memberRowsWritten / c.r.messages)}`],
    ['SQL rows read / msg (group / members)', (c) => `${f(c.x.groupRowsRead / c.r.messages)} / ${f(c.x.memberRowsRead / c.r.messages)}`],
    ['storage transactions / msg', (c) => f(c.x.commits / c.r.messages)],
    ['calls to the group shard / msg', (c) => f(total(c.x.groupIn) / c.r.messages)],
    ['  by op', (c) => Object.entries(c.x.groupIn).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${f(v / c.r.messages)}`).join(', ')],
    ['calls from the group shard to members / msg', (c) => f(total(c.x.groupOut) / c.r.messages)],
    ['  by kind', (c) => Object.entries(c.x.groupOut).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${f(v / c.r.messages)}`).join(', ')],
    ['other calls to member shards / msg', (c) => f(c.x.memberRpcIn / c.r.messages)],
    ['alarms / msg (group + members)', (c) => f(c.x.alarms / c.r.messages)],
    ['upgrades / msg', (c) => f(c.x.upgrades / c.r.messages, 3)],
    ['incoming WS messages / msg (client frames)', (c) => f(total(c.x.clientOut) / c.r.messages)],
    ['  by type', (c) => Object.entries(c.x.clientOut).map(([t, v]) => `${t} ${f(v / c.r.messages)}`).join(', ')],
    ['outgoing WS messages / msg (free)', (c) => f(c.x.wsOutFrames / c.r.messages)],
    ['**billed DO requests / msg**', (c) => `**${f(requests(c.x, p.wsPerRequest) / c.r.messages)}**`],
    ['DO handler wall ms / msg (lower bound)', (c) => f(c.x.handlerMs / c.r.messages)],
    ['database growth, bytes / msg', (c) => f(c.x.databaseBytes / c.r.messages, 0)],
    ['$ / M msgs: requests', (c) => f(dollars(c.x, c.r.messages, p).requests)],
    ['$ / M msgs: rows written', (c) => f(dollars(c.x, c.r.messages, p).rowsWritten)],
    ['$ / M msgs: rows read + duration', (c) => f(dollars(c.x, c.r.messages, p).rowsRead + dollars(c.x, c.r.messages, p).duration, 3)],
    ['**$ / M group msgs: total**', (c) => `**${f(dollars(c.x, c.r.messages, p).total)}**`],
  ];
  const head = `| per group message | ${cols.map((c) => c.label).join(' | ')} |`;
  const sep = `|---|${cols.map(() => '---:').join('|')}|`;
  return [head, sep, ...rows.map(([l, g]) => `| ${l} | ${cols.map(g).join(' | ')} |`)].join('\n');
}

/** Rows by statement for one size, live and catch-up apart, per group message. */
export function groupStatements(r: GroupResult): string {
  const out: string[] = [];
  for (const [phase, x] of [['live', r.live], ['catch-up', r.catchUp]] as const) {
    const rows = Object.entries(x.statements)
      .map(([k, t]) => ({ q: k.split('\u0000')[1]!.replace(/\s+/g, ' ').trim(), ...t }))
      .filter((t) => t.rowsWritten > 0 || t.rowsRead > 0)
      .sort((a, b) => b.rowsWritten - a.rowsWritten || b.rowsRead - a.rowsRead);
    out.push(`\n${r.members} members, ${phase}: rows by statement, per group message`, '| shard | statement | calls | rows written | rows read |', '|---|---|---:|---:|---:|');
    for (const t of rows) out.push(`| ${t.shard} | \`${t.q.length > 110 ? `${t.q.slice(0, 107)}...` : t.q}\` | ${f(t.calls / r.messages)} | ${f(t.rowsWritten / r.messages)} | ${f(t.rowsRead / r.messages)} |`);
  }
  return out.join('\n');
}
