/**
 * The web chat's own history: conversations and their messages, kept in localStorage per user and written
 * synchronously inside the SDK's event handlers, so a message is on disk before the SDK acks it (it acks after
 * the listeners ran) and a reload shows exactly what was shown. The SDK's IndexedDB store keeps the rest: the
 * cursor, receipt versions and the outbox (sends not yet acked go out after a reload).
 */

/** ✓ pending (clock), ✓ sent (acked by the server), ✓✓ delivered, read (blue ✓✓). Only for this user's messages. */
export type Tick = 'pending' | 'sent' | 'delivered' | 'read';

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

const RANK: Record<Tick, number> = { pending: 0, sent: 1, delivered: 2, read: 3 };

export class History {
  readonly convs = new Map<string, Conversation>();
  private readonly key: string;

  constructor(readonly me: string) {
    this.key = `webchat.history.${me}`;
    const raw = localStorage.getItem(this.key);
    for (const c of raw ? (JSON.parse(raw) as Conversation[]) : []) this.convs.set(c.id, c);
  }

  save(): void {
    localStorage.setItem(this.key, JSON.stringify([...this.convs.values()]));
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

  private raise(m: ChatMessage, tick: Tick): void {
    if (!m.tick || RANK[tick] > RANK[m.tick]) m.tick = tick;
  }
}
