import { ID_PATTERN, REF_KINDS, type Entry, type MessageRef, type RefKind } from '../protocol/index.js';

/**
 * Message references (PROTOCOL.md 9.9): who may refer to what. A reply, an edit, a delete for everyone or a
 * reaction is an ordinary message (its own server id, outbox number, dedup record, receipts) that names an
 * earlier message; its body stays opaque. The server checks only the reference:
 *
 *   - the target is a message of THIS conversation: sent by the referring user or by another participant;
 *   - it exists as far as the conversation can tell (issued by its sender / received here);
 *   - edit and delete: only the target's own sender, within a window after the target was accepted.
 *
 * The rules are here once, over a small context, so that a group can use them with its own facts. 1:1 (built,
 * core/mailbox.ts onSend via oneToOneContext below): the participants are the two users, message ids are
 * `<sender>:<n>` with n the sender's outbox number, "exists" is n issued (own) or n <= the highest number
 * received from the peer, and the acceptance time and recipient of one's own messages come from their dedup
 * record (the last dedupWindow sends). A group (to plug in): its shard builds a RefContext with `conv` = the
 * group id, `participant` = roster membership at the time of the send, and `target` read from its log row
 * (sender, ts, the group as conversation), then calls checkRef before appending the entry; nothing here is 1:1.
 */

export type RefRefusal = 'bad_ref' | 'ref_not_allowed' | 'ref_expired';

export type RefVerdict = { ok: true } | { ok: false; code: RefRefusal; message: string };

/** What the conversation knows about one message it was asked about. */
export interface RefTarget {
  /** Its sender. */
  sender: string;
  /** Whether it exists as far as this side can tell (issued by its sender, or received here). */
  exists: boolean;
  /**
   * When it was accepted and in which conversation, if that is still known; called only for the referring user's
   * own messages (an edit, a delete, or a reference that must stay in its conversation). `conv` '' = unknown.
   */
  sent?(): { ts: number; conv: string } | undefined;
}

export interface RefContext {
  /** The user sending the referring message. */
  user: string;
  /** The conversation it is sent in: the peer in 1:1, the group id in a group. */
  conv: string;
  now: number;
  /** Edit and delete windows in ms; 0: not allowed at all. */
  editWindowMs: number;
  deleteWindowMs: number;
  /** Whether `u` (not the user) takes part in the conversation, so that its messages may be referred to. */
  participant(u: string): boolean;
  /** What is known about message `msg`; undefined when it is not a message id of this conversation's form. */
  target(msg: string): RefTarget | undefined;
}

const refuse = (code: RefRefusal, message: string): RefVerdict => ({ ok: false, code, message });

const WINDOW: Record<RefKind, 'edit' | 'delete' | null> = { reply: null, react: null, edit: 'edit', delete: 'delete' };

/** Allow or refuse a reference, with the typed error a refusal carries. Reads only; call inside the send's commit. */
export function checkRef(ref: MessageRef, c: RefContext): RefVerdict {
  const t = c.target(ref.msg);
  if (t === undefined) return refuse('bad_ref', `ref.msg: ${ref.msg} is not a message id of this conversation`);
  const own = t.sender === c.user;
  if (!own && !c.participant(t.sender)) return refuse('ref_not_allowed', `${ref.msg} is not a message of this conversation`);
  if (!t.exists) return refuse('bad_ref', `no message ${ref.msg} in this conversation`);
  const window = WINDOW[ref.kind];
  if (window !== null && !own) return refuse('ref_not_allowed', `only the sender of ${ref.msg} may ${ref.kind} it`);
  if (!own) return { ok: true };
  const sent = t.sent?.();
  // One's own message must stay in the conversation it was sent in, where that is still known.
  if (sent && sent.conv !== '' && sent.conv !== c.conv) return refuse('ref_not_allowed', `${ref.msg} was not sent in this conversation`);
  if (window === null) return { ok: true };
  const ms = window === 'edit' ? c.editWindowMs : c.deleteWindowMs;
  if (ms <= 0) return refuse('ref_expired', `this server does not allow messages to be ${window === 'edit' ? 'edited' : 'deleted'}`);
  // Not known any more (older than the dedup window): it cannot be shown to be inside the window.
  if (!sent) return refuse('ref_expired', `${ref.msg} is too old to ${ref.kind}`);
  if (c.now - sent.ts > ms) return refuse('ref_expired', `${ref.msg} is older than the ${Math.round(ms / 1000)} s ${ref.kind} window`);
  return { ok: true };
}

/** Server message ids on the reference server: `<sender>:<n>`, n the sender's outbox number. */
const MSG_ID = /^(.+):([1-9][0-9]{0,15})$/;

export function parseMessageId(msg: string): { sender: string; n: number } | undefined {
  const m = MSG_ID.exec(msg);
  if (!m || !ID_PATTERN.test(m[1]!)) return undefined;
  return { sender: m[1]!, n: Number(m[2]) };
}

/** What a 1:1 mailbox knows, as keyed lookups on its store (core/store.ts); the dedup scan runs only when asked. */
export interface OneToOneFacts {
  user: string;
  peer: string;
  now: number;
  editWindowS: number;
  deleteWindowS: number;
  /** The user's next outbox number: its messages up to one below were issued. */
  nextN(): number;
  /** The highest outbox number of the peer's messages received by the user. */
  peerLastN(peer: string): number;
  /** The dedup record of the user's message n: when it was accepted and to whom ('' before schema migration 7). */
  sent(n: number): { ts: number; peer: string } | undefined;
}

/** The RefContext of a 1:1 conversation between `user` and `peer` (core/mailbox.ts onSend). */
export function oneToOneContext(f: OneToOneFacts): RefContext {
  return {
    user: f.user,
    conv: f.peer,
    now: f.now,
    editWindowMs: f.editWindowS * 1000,
    deleteWindowMs: f.deleteWindowS * 1000,
    participant: (u) => u === f.peer,
    target: (msg) => {
      const id = parseMessageId(msg);
      if (!id) return undefined;
      if (id.sender === f.user) {
        return {
          sender: id.sender,
          exists: id.n < f.nextN(),
          sent: () => {
            const s = f.sent(id.n);
            return s && { ts: s.ts, conv: s.peer };
          },
        };
      }
      // Received from the peer: its numbers are shared by all of its conversations, so n <= the highest one
      // received here says that it exists, not that it was sent to this user (not checked: a client shows a
      // reference to a message it does not have as a reference to an unknown message).
      return { sender: id.sender, exists: id.sender === f.peer && id.n <= f.peerLastN(id.sender) };
    },
  };
}

/** Stored form of a reference: two columns of the outbox and inbox rows (schema migration 7). */
export function refColumns(ref: MessageRef | undefined): [number, string] {
  return ref ? [REF_KINDS[ref.kind], ref.msg] : [0, ''];
}

const REF_BY_NUMBER = new Map<number, RefKind>((Object.entries(REF_KINDS) as [RefKind, number][]).map(([k, n]) => [n, k]));

export function refFromColumns(kind: number | undefined, msg: string | undefined): MessageRef | undefined {
  const k = kind === undefined ? undefined : REF_BY_NUMBER.get(kind);
  return k === undefined || msg === undefined || msg === '' ? undefined : { kind: k, msg };
}

/**
 * The entries a connection is given (core/delivery.ts). A client whose hello did not name HELLO_FEATURES.refs
 * cannot decode references: it gets a reply as the plain message it also is, and no edit, delete or reaction at
 * all, rather than reading one as a new message (PROTOCOL.md 9.9). How the entries left out are acknowledged:
 * core/shown.ts.
 */
export function entriesFor(entries: Entry[], refs: boolean | undefined): Entry[] {
  if (refs === true || !entries.some((e) => e.ref !== undefined)) return entries;
  const out: Entry[] = [];
  for (const e of entries) {
    if (e.ref === undefined) out.push(e);
    else if (e.ref.kind === 'reply') out.push({ seq: e.seq, kind: e.kind, msg: e.msg, peer: e.peer, ts: e.ts, body: e.body });
  }
  return out;
}
