import type { GroupEntry, GroupEntryKind, MessageRef } from '../../protocol/index.js';
import type { Config } from '../config.js';
import type { Clock, Logger, Peers, Scheduler, Storage } from '../ports.js';
import { StorageFullError } from '../ports.js';
import { pushTyping } from '../typing.js';
import { FanOut, GroupPushNotes } from './fanout.js';
import { checkGroupRef } from './refs.js';
import { GroupStore, type MemberRow } from './store.js';
import type { GroupAccepted, GroupCall, GroupChange, GroupReadResult, GroupReceiptsResult, GroupRefusal, GroupResult, GroupRosterResult, GroupWatchResult, Ranges } from './types.js';

export interface GroupShardDeps {
  group: string;
  storage: Storage;
  peers: Peers;
  scheduler: Scheduler;
  clock: Clock;
  config: Config;
  log: Logger;
  push?: import('../push.js').PushSettings | undefined; // push webhooks for offline members (core/group/push-notes.ts); off without a url
}

/** Largest page a read returns. */
export const READ_PAGE = 256;
/** Log entries past the retention are looked for at most this often. */
const TRIM_EVERY_MS = 60_000;
/** Changed receipts reach the packed row within this long when no send commits first. */
const RECEIPTS_WRITE_MS = 1_000;
/** The dedup window is pruned every this many accepted frames. */
const PRUNE_EVERY = 256;

const refuse = (code: GroupRefusal['code'], message: string): GroupRefusal => ({ ok: false, code, message });

/**
 * One group's shard (design B of docs/ARCHITECTURE.md "Groups"): the roster and the log, one order for every
 * member. A send or change is deduplicated by (sender, client id), appended with the next seq and committed before
 * the reply; after the commit the new entries are pushed, in rounds of at most FANOUT_BATCH, to every ONLINE
 * member's shard in one call each. A member shard has at most one call in flight: a member still busy with the
 * previous round is marked behind and, once its call returns, is nudged to pull; a call that fails just marks it
 * behind (the log is the truth, the push a hint). Nothing here ever awaits a member.
 */
export class GroupShard {
  readonly group: string;
  private readonly store: GroupStore;
  private loaded = false;
  private exists = false;
  private head = 0;
  /** Every membership range, per user, oldest first. */
  private readonly ranges = new Map<string, MemberRow[]>();
  /** Current members whose shard has a device connected. */
  private readonly online = new Set<string>();
  /** The push to online members (core/group/fanout.ts). */
  private readonly fan: FanOut;
  /** Every member's [delivered, read] seqs (the packed row, groups.receipts). */
  private receipts = new Map<string, [number, number]>();
  /** Marks changed since the packed row was last written (written with the next commit or wake-up). */
  private receiptsDirty = false;
  /** Members whose shard is not yet told of their latest range (joined or left), and those being told now. */
  private readonly untold = new Set<string>();
  private readonly telling = new Set<string>();
  private accepted = 0;
  /** When entries past the retention were last deleted (at most once a minute, on a write). */
  private lastTrim = 0;

  constructor(private readonly deps: GroupShardDeps) {
    this.group = deps.group;
    this.store = new GroupStore(deps.storage.sql, deps.group);
    this.fan = new FanOut({
      group: deps.group,
      peers: deps.peers,
      online: this.online,
      rangesOf: (u) => this.rangesOf(u),
      isMember: (u) => this.current(u) !== undefined,
      retryLater: () => deps.scheduler.wakeAt(deps.clock.now() + deps.config.retryBaseMs),
      notes: deps.push?.url !== undefined ? new GroupPushNotes({ ...deps, push: deps.push }, this.ranges, this.online) : undefined,
    });
  }

  /** One call from a user's shard (Peers.group). Never rejects for the caller's fault: refusals are results. */
  async call(c: GroupCall): Promise<GroupResult> {
    switch (c.op) {
      case 'send':
        return this.accept(c.from, c.cid, () => this.appendMessage(c.from, c.body, c.ref));
      case 'change':
        return this.accept(c.from, c.cid, () => this.applyChange(c.from, c.change));
      case 'roster':
        return this.tx(() => this.roster(c.from));
      case 'read':
        return this.tx(() => this.read(c.from, c.after, Math.min(Math.max(1, c.limit), READ_PAGE)));
      case 'watch':
        return this.tx(() => this.watch(c.from, c.on));
      case 'mark':
        return this.tx(() => this.mark(c.from, c.delivered, c.read));
      case 'receipts':
        return this.tx(() => this.receiptsOf(c.from, c.seq));
      case 'typing':
        return this.typing(c.from, c.on);
    }
  }

  /** Scheduled wake-up: members not told of a membership change are told again; members behind are nudged. */
  async onWake(): Promise<void> {
    await this.tx(() => {
      this.load();
      this.writeReceipts();
    });
    this.tellUntold();
    this.fan.wake();
  }

  // ------------------------------------------------------------------ writes

  private async accept(from: string, cid: string, apply: () => GroupAccepted | GroupRefusal): Promise<GroupResult> {
    const now = this.deps.clock.now();
    const r = await this.tx(() => {
      this.load();
      const prior = this.store.dedup(from, cid);
      if (prior) return { ok: true, seq: prior.seq, ts: prior.ts, dup: true } as const;
      const out = apply();
      if (!out.ok) return out;
      this.store.putDedup(from, cid, out.seq, now);
      if (++this.accepted % PRUNE_EVERY === 0 && this.head > this.deps.config.dedupWindow) this.store.pruneDedup(this.head - this.deps.config.dedupWindow);
      if (now - this.lastTrim >= TRIM_EVERY_MS) {
        // The retention cap: entries older than it go, whoever has not read them (they get history_gap).
        this.lastTrim = now;
        this.store.trimBefore(now - this.deps.config.groupRetentionMs, this.head);
      }
      this.writeReceipts();
      return out;
    });
    if (r.ok && !r.dup) {
      this.fan.committedUpTo(r.seq);
      this.tellUntold();
    }
    return r;
  }

  private entry(kind: GroupEntryKind, from: string, subject = '', name = '', body: Uint8Array = new Uint8Array(0), ref?: MessageRef): GroupEntry {
    const e: GroupEntry = { seq: ++this.head, kind, from, subject, name, ts: this.deps.clock.now(), body, ...(ref && { ref }) };
    this.store.append(e);
    this.fan.appended(e);
    return e;
  }

  private appendMessage(from: string, body: Uint8Array, ref?: MessageRef): GroupAccepted | GroupRefusal {
    if (!this.current(from)) return refuse('not_member', 'not a member of this group');
    // A reference is checked before the entry is appended (core/group/refs.ts); a refusal stores nothing.
    const { group, deps } = this;
    const v = ref && checkGroupRef(ref, { group, from, now: deps.clock.now(), config: deps.config, ranges: this.rangesOf(from), wasMember: (u) => this.ranges.has(u), entry: (seq) => this.store.range(seq - 1, seq, 1)[0] });
    if (v && !v.ok) return refuse(v.code, v.message);
    const e = this.entry('message', from, '', '', body, ref);
    return { ok: true, seq: e.seq, ts: e.ts, dup: false };
  }

  private applyChange(from: string, ch: GroupChange): GroupAccepted | GroupRefusal {
    const cap = this.deps.config.groupMemberCap;
    if (ch.kind === 'create') {
      if (this.exists) return refuse('bad_state', 'a group with this id exists');
      const members = [...new Set(ch.members)].filter((m) => m !== from);
      if (members.length + 1 > cap) return refuse('group_full', `a group has at most ${cap} members`);
      this.store.createGroup(from, ch.name, this.deps.clock.now());
      this.exists = true;
      const e = this.entry('create', from, from, ch.name);
      this.open(from, e.seq, true);
      // The first members see the group from its create entry: its name and every first member's join.
      for (const m of members) {
        this.entry('join', from, m);
        this.open(m, e.seq, false);
      }
      return this.done();
    }
    const me = this.current(from);
    if (!me) return refuse('not_member', 'not a member of this group');
    const admin = me.admin === 1;
    switch (ch.kind) {
      case 'add': {
        if (!admin) return refuse('not_admin', 'only an admin adds members');
        const add = [...new Set(ch.members)].filter((m) => !this.current(m));
        if (this.memberCount() + add.length > cap) return refuse('group_full', `a group has at most ${cap} members`);
        for (const m of add) this.open(m, this.entry('join', from, m).seq, false);
        return this.done();
      }
      case 'remove':
      case 'leave': {
        const who = ch.kind === 'leave' ? from : ch.member;
        if (who !== from && !admin) return refuse('not_admin', 'only an admin removes members');
        const range = this.current(who);
        if (!range) return this.done();
        range.left_at = this.entry('leave', from, who).seq;
        this.store.putMember(range);
        this.untold.add(who);
        return this.done();
      }
      case 'role': {
        if (!admin) return refuse('not_admin', 'only an admin changes roles');
        const range = this.current(ch.member);
        if (!range) return refuse('not_member', `${ch.member} is not a member of this group`);
        if ((range.admin === 1) === ch.admin) return this.done();
        this.entry('role', from, ch.member, '', Uint8Array.of(ch.admin ? 1 : 0));
        range.admin = ch.admin ? 1 : 0;
        this.store.putMember(range);
        return this.done();
      }
      case 'update':
        if (!admin) return refuse('not_admin', 'only an admin renames the group');
        this.entry('update', from, '', ch.name, ch.meta);
        this.store.setNameMeta(ch.name, ch.meta);
        return this.done();
    }
  }

  /** The answer to a change: its last entry (the head), or the head unchanged for a change that was a no-op. */
  private done(): GroupAccepted {
    return { ok: true, seq: this.head, ts: this.deps.clock.now(), dup: false };
  }

  private open(user: string, joined: number, admin: boolean): void {
    const row: MemberRow = { member: user, joined, left_at: 0, admin: admin ? 1 : 0, online: 0, told: 0 };
    this.store.putMember(row);
    this.untold.add(user);
    const list = this.ranges.get(user);
    if (list) list.push(row);
    else this.ranges.set(user, [row]);
  }

  private current(user: string): MemberRow | undefined {
    const last = this.ranges.get(user)?.at(-1);
    return last && last.left_at === 0 ? last : undefined;
  }

  private memberCount(): number {
    let n = 0;
    for (const list of this.ranges.values()) if (list.at(-1)!.left_at === 0) n++;
    return n;
  }

  private rangesOf(user: string): Ranges {
    return (this.ranges.get(user) ?? []).map((r): [number, number] => [r.joined, r.left_at]);
  }

  // ------------------------------------------------------------------ reads

  private roster(from: string): GroupRosterResult | GroupRefusal {
    this.load();
    if (!this.current(from)) return refuse('not_member', 'not a member of this group');
    const row = this.store.groupRow()!;
    const members = [...this.ranges].filter(([, l]) => l.at(-1)!.left_at === 0).map(([user, l]) => ({ user, admin: l.at(-1)!.admin === 1 }));
    return { ok: true, name: row.name, meta: row.meta, head: this.head, members };
  }

  /** Entries of `from`'s ranges after `after`: a page, how far it covered, and what `from` may see at most. */
  private read(from: string, after: number, limit: number): GroupReadResult | GroupRefusal {
    this.load();
    const list = this.ranges.get(from);
    if (!list) return refuse('not_member', 'not a member of this group');
    const trimmed = this.store.groupRow()?.trimmed ?? 0;
    // A gap only when entries of the caller's own ranges were deleted before it read them.
    const gap = list.some((r) => Math.max(after + 1, r.joined) <= Math.min(trimmed, r.left_at === 0 ? Infinity : r.left_at)) ? trimmed : undefined;
    let pos = Math.max(after, trimmed);
    const entries: GroupEntry[] = [];
    const last = list.at(-1)!;
    const head = last.left_at === 0 ? this.head : last.left_at;
    for (const r of list) {
      const end = r.left_at === 0 ? this.head : r.left_at;
      if (end <= pos) continue;
      const got = this.store.range(Math.max(pos, r.joined - 1), end, limit - entries.length);
      entries.push(...got);
      if (entries.length >= limit) return { ok: true, entries, upTo: entries.at(-1)!.seq, head, ...(gap !== undefined && { gap }) };
      pos = end;
    }
    return { ok: true, entries, upTo: Math.max(pos, after), head, ...(gap !== undefined && { gap }) };
  }

  private watch(from: string, on: boolean): GroupWatchResult | GroupRefusal {
    this.load();
    const list = this.ranges.get(from);
    if (!list) return refuse('not_member', 'not a member of this group');
    const cur = this.current(from);
    if (cur && on !== this.online.has(from)) {
      if (on) this.online.add(from);
      else this.online.delete(from);
      cur.online = on ? 1 : 0;
      this.store.putMember(cur);
    }
    return { ok: true, head: cur ? this.head : list.at(-1)!.left_at };
  }

  /** A member's coalesced delivered / read marks: kept when they move forward, in the packed row. */
  private mark(from: string, delivered: number, read: number): GroupWatchResult | GroupRefusal {
    this.load();
    const list = this.ranges.get(from);
    if (!list) return refuse('not_member', 'not a member of this group');
    const [d, r] = this.receipts.get(from) ?? [0, 0];
    const nd = Math.min(Math.max(d, delivered), this.head);
    const nr = Math.min(Math.max(r, read), nd);
    if (nd !== d || nr !== r) {
      this.receipts.set(from, [nd, nr]);
      // Not written now: the packed row holds every member, so writing it per mark made 1,024 members' marks
      // O(members^2) bytes a second (measured: the ack p99 of a 1,024-member group went from ~0.3 to 0.5 s). It
      // goes with the next send's commit, or from the wake-up within RECEIPTS_WRITE_MS.
      if (!this.receiptsDirty) {
        this.receiptsDirty = true;
        this.deps.scheduler.wakeAt(this.deps.clock.now() + RECEIPTS_WRITE_MS);
      }
    }
    return { ok: true, head: this.head };
  }

  /** The packed receipts row, when marks changed since it was last written. Inside a commit. */
  private writeReceipts(): void {
    if (!this.receiptsDirty) return;
    this.receiptsDirty = false;
    this.store.setReceipts(this.receipts);
  }

  /** Who received and read entry `seq`: every member whose ranges include it, but its sender, who alone may ask. */
  private receiptsOf(from: string, seq: number): GroupReceiptsResult | GroupRefusal {
    this.load();
    if (!this.current(from)) return refuse('not_member', 'not a member of this group');
    const e = this.store.range(seq - 1, seq, 1)[0];
    if (!e || e.seq !== seq || e.kind !== 'message' || e.from !== from) return refuse('bad_state', 'only the sender of a kept message may ask who received it');
    const states = [];
    for (const [user, list] of this.ranges) {
      if (user === from || !list.some((r) => seq >= r.joined && (r.left_at === 0 || seq <= r.left_at))) continue;
      const [d, r] = this.receipts.get(user) ?? [0, 0];
      states.push({ user, state: r >= seq ? ('read' as const) : d >= seq ? ('delivered' as const) : ('sent' as const) });
    }
    return { ok: true, seq, states };
  }

  /**
   * Typing (ARCHITECTURE.md "Typing"): no commit, no row; one call to each online member but the typer, not awaited
   * (a slow member delays no one). A member shard with no device is not in `online`, so it is never woken for it.
   */
  private async typing(from: string, on: boolean): Promise<GroupWatchResult | GroupRefusal> {
    this.load();
    if (!this.current(from)) return refuse('not_member', 'not a member of this group');
    void pushTyping(this.deps.peers, [...this.online], from, this.group, on);
    return { ok: true, head: this.head };
  }

  // ------------------------------------------------------------------ membership news

  /** Tells each member whose range changed (joined, left) its new range; retried from the wake until it answers. */
  private tellUntold(): void {
    const gn = this.deps.peers.groupNews;
    if (!gn) return;
    for (const user of this.untold) {
      if (this.telling.has(user)) continue;
      const r = this.ranges.get(user)?.at(-1);
      const mark = r ? r.left_at || r.joined : 0;
      if (!r || r.told >= mark) {
        this.untold.delete(user);
        continue;
      }
      this.telling.add(user);
      gn.call(this.deps.peers, user, { group: this.group, joined: r.joined, left: r.left_at }).then(
        () =>
          this.tx(() => {
            if (r.told >= mark) return;
            r.told = mark;
            this.store.putMember(r);
          }).then(
            () => {
              this.telling.delete(user);
              // Changed again meanwhile (left after joining, re-added): tell the newer range too.
              const cur = this.ranges.get(user)?.at(-1);
              if (cur && cur.told >= (cur.left_at || cur.joined)) this.untold.delete(user);
              else this.tellUntold();
            },
            () => {
              this.telling.delete(user);
              this.deps.scheduler.wakeAt(this.deps.clock.now() + this.deps.config.retryBaseMs);
            },
          ),
        () => {
          this.telling.delete(user);
          this.deps.scheduler.wakeAt(this.deps.clock.now() + this.deps.config.retryBaseMs);
        },
      );
    }
  }

  // ------------------------------------------------------------------ state

  private load(): void {
    if (this.loaded) return;
    this.ranges.clear();
    this.online.clear();
    this.untold.clear();
    this.exists = this.store.groupRow() !== undefined;
    this.head = this.store.head();
    this.receipts = this.exists ? this.store.receipts() : new Map();
    this.receiptsDirty = false;
    this.fan.reset(this.head);
    for (const m of this.store.members()) {
      const list = this.ranges.get(m.member);
      if (list) list.push(m);
      else this.ranges.set(m.member, [m]);
    }
    for (const [user, list] of this.ranges) {
      const r = list.at(-1)!;
      if (r.left_at === 0 && r.online === 1) this.online.add(user);
      if (r.told < (r.left_at || r.joined)) {
        this.untold.add(user);
        this.deps.scheduler.wakeAt(this.deps.clock.now());
      }
    }
    this.loaded = true;
  }

  /** Storage.commit; when it fails, memory is read again from what is stored (the database rolled back, memory did not). */
  private tx<T>(fn: () => T): Promise<T> {
    return this.deps.storage.commit(fn).catch((e: unknown) => {
      this.loaded = false;
      if (!(e instanceof StorageFullError)) this.deps.log.log('error', `group ${this.group}: commit failed`, e);
      throw e;
    });
  }
}
