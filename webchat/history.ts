/**
 * The web chat's history: conversations and their messages, one row per conversation in the SDK's own
 * IndexedDB store (IndexedDbStore.putHistory, the same database as the cursor and the outbox). Written inside
 * the SDK's event handlers and before every send, so the store's transaction order makes a reload show what was
 * shown: a delivered message is in the history or comes again from the SDK (`recovered`), and a send the SDK
 * kept in its outbox is in the history (the page sends what is still pending again, with its id, after a load).
 */
import type { IndexedDbStore } from '../client/index.js';

/**
 * 🕓 pending, ✓ sent (acked by the server), ✓✓ delivered, read (blue ✓✓); failed: refused for good (not sent
 * again). Only for this user's messages.
 */
export type Tick = 'failed' | 'pending' | 'sent' | 'delivered' | 'read';

export interface ChatMessage {
  /** Client id of an own send; the server id (`<sender>:<n>`, or `<group>#<seq>`) for others. */
  id: string;
  /** Server message id once known (1:1). */
  msg?: string;
  /** Group sequence once known. */
  seq?: number;
  from: string;
  text: string;
  ts: number;
  tick?: Tick;
  /** A group membership line, not a message. */
  system?: boolean;
}

export interface Conversation {
  id: string;
  kind: 'dm' | 'group';
  name: string;
  msgs: ChatMessage[];
  unread: number;
  left?: boolean;
}

/** The sequence number of a 1:1 message id `<sender>:<n>`. */
export function msgNumber(msg: string): number {
  const n = Number(msg.slice(msg.lastIndexOf(':') + 1));
  return Number.isFinite(n) ? n : -1;
}

const RANK: Record<Tick, number> = { failed: -1, pending: 0, sent: 1, delivered: 2, read: 3 };

export class History {
  readonly convs = new Map<string, Conversation>();
  /** Each conversation as last written (JSON): save() writes only the ones that changed. */
  private readonly written = new Map<string, string>();

  private constructor(
    readonly me: string,
    private readonly store: IndexedDbStore,
  ) {}

  /** The history kept in `store`; a history an older page kept in localStorage is moved there once. */
  static async open(me: string, store: IndexedDbStore): Promise<History> {
    const h = new History(me, store);
    for (const row of await store.loadHistory<Conversation>()) {
      h.convs.set(row.key, row.value);
      h.written.set(row.key, JSON.stringify(row.value));
    }
    const legacy = `webchat.history.${me}`;
    const raw = localStorage.getItem(legacy);
    if (raw !== null) {
      for (const c of JSON.parse(raw) as Conversation[]) if (!h.convs.has(c.id)) h.convs.set(c.id, c);
      await h.save();
      localStorage.removeItem(legacy);
    }
    return h;
  }

  /**
   * Writes every conversation that changed since it was last written, one transaction each, started now (so
   * before any store write the SDK makes after this call). Resolves once they committed.
   */
  save(): Promise<void> {
    const writes: Promise<void>[] = [];
    for (const c of this.convs.values()) {
      const json = JSON.stringify(c);
      if (this.written.get(c.id) === json) continue;
      this.written.set(c.id, json);
      writes.push(
        this.store.putHistory(c.id, JSON.parse(json)).catch((e: unknown) => {
          this.written.delete(c.id); // written again by the next save
          throw e;
        }),
      );
    }
    return Promise.all(writes).then(() => undefined);
  }

  /** Own messages not acknowledged yet, oldest first: sent again (same ids) when the page starts. */
  pending(): { conv: Conversation; msg: ChatMessage }[] {
    const out: { conv: Conversation; msg: ChatMessage }[] = [];
    for (const conv of this.convs.values()) for (const msg of conv.msgs) if (msg.from === this.me && msg.tick === 'pending' && !msg.system) out.push({ conv, msg });
    return out.sort((a, b) => a.msg.ts - b.msg.ts);
  }

  conv(id: string, kind: 'dm' | 'group' = 'dm', name = id): Conversation {
    let c = this.convs.get(id);
    if (!c) {
      c = { id, kind, name, msgs: [], unread: 0 };
      this.convs.set(id, c);
    }
    return c;
  }

  /** Conversations, the one with the newest message first. */
  list(): Conversation[] {
    const last = (c: Conversation) => c.msgs.at(-1)?.ts ?? 0;
    return [...this.convs.values()].sort((a, b) => last(b) - last(a));
  }

  /** Adds a message unless one with the same id (or server id) is there; returns whether it was added. */
  add(convId: string, m: ChatMessage, kind: 'dm' | 'group' = 'dm'): boolean {
    const c = this.conv(convId, kind);
    if (c.msgs.some((x) => x.id === m.id || (m.msg !== undefined && x.msg === m.msg))) return false;
    c.msgs.push(m);
    return true;
  }

  /** An own send was acked: it has its server id now. */
  acked(clientId: string, msg: string, ts: number): void {
    for (const c of this.convs.values()) {
      const m = c.msgs.find((x) => x.id === clientId);
      if (m) {
        m.msg = msg;
        m.ts = ts;
        this.raise(m, 'sent');
        return;
      }
    }
  }

  /** A cumulative receipt from `by`: every own message to it up to `msg` is at least `tick`. */
  receipt(by: string, msg: string, tick: Tick): void {
    const c = this.convs.get(by);
    if (!c) return;
    const upTo = msgNumber(msg);
    for (const m of c.msgs) if (m.from === this.me && m.msg !== undefined && msgNumber(m.msg) <= upTo) this.raise(m, tick);
  }

  /** Every own message of `group` up to `seq` is at least `tick` (group marks are cumulative per member). */
  groupReceipt(group: string, seq: number, tick: Tick): void {
    const c = this.convs.get(group);
    if (!c) return;
    for (const m of c.msgs) if (m.from === this.me && !m.system && m.seq !== undefined && m.seq <= seq) this.raise(m, tick);
  }

  private raise(m: ChatMessage, tick: Tick): void {
    if (!m.tick || RANK[tick] > RANK[m.tick]) m.tick = tick;
  }
}
