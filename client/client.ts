// Over 400 lines on purpose: IrisClient is the SDK's whole public surface (one method per operation: messages,
// references, reads, presence, typing, groups, keys), each a few lines that check the arguments and hand over to the part
// that owns the work (outbox.ts, inbox.ts, groups.ts, typing.ts, presence.ts, keys.ts). One class keeps the API readable in
// one place, as a WebSocket class does; the logic lives in those files.
import { CLIENT_ID_PATTERN, ID_PATTERN, LIMITS, REF_KINDS, type ErrorFrame, type PresenceVisibility, type RefKind, type ServerFrame } from '../protocol/index.js';
import { Connection } from './connection.js';
import { defaultStore } from './default-store.js';
import { Emitter, type Listener } from './emitter.js';
import { IrisError, errText, errorOfFrame } from './errors.js';
import { IdGenerator } from './ids.js';
import { Groups, checkRequest, type GroupAckResult, type GroupReceiptsResult, type RosterResult } from './groups.js';
import { Inbox } from './inbox.js';
import { KeyDirectory, type KeyBundleEntry, type KeysInput, type KeysStateInfo } from './keys.js';
import { Outbox } from './outbox.js';
import { attachPageHooks } from './page.js';
import { PresenceQueries } from './presence.js';
import { StoreQueue } from './store-queue.js';
import { OwnSends } from './sync.js';
import { TypingIndicators } from './typing.js';
import type { ClientEvents, ConnectionState, IrisClientOptions, IrisRef, PresenceInfo, SendAck, Welcome } from './types.js';

/** Reference server message ids are `<conversation>:<n>`. */
const MSG_OF = (conv: string, msg: string): boolean => msg.startsWith(`${conv}:`) && /^[1-9][0-9]*$/.test(msg.slice(conv.length + 1));

const utf8 = new TextEncoder();

/**
 * The Iris client. One instance is one device of one user: it holds one WebSocket at a time, reconnects with
 * backoff, resumes delivery after its cursor, resends unacknowledged sends with their original ids, and
 * acks deliveries once the app has processed them.
 *
 * This class is the public face and the switchboard: Connection (socket lifecycle, reconnects), Inbox
 * (deliveries, acks), Outbox (sends) and PresenceQueries each own their state, and talk to each other only
 * through the calls made here and the current Link.
 */
export class IrisClient {
  readonly device: string;
  private readonly events = new Emitter<ClientEvents>();
  private readonly ids = new IdGenerator();
  private readonly queue: StoreQueue;
  private readonly conn: Connection;
  private readonly inbox: Inbox;
  private readonly outbox: Outbox;
  private readonly queries: PresenceQueries;
  private readonly typingState: TypingIndicators;
  private readonly groups: Groups;
  private readonly keyDir: KeyDirectory;
  private loaded: Promise<void> | null = null;
  /** Read marks not yet written, per conversation (only the newest matters: marks are cumulative). */
  private readonly pendingReads = new Map<string, string>();
  /** A settings change not yet written. */
  private pendingReadReceipts: boolean | undefined;
  private readReceiptsValue: boolean | undefined;
  /**
   * The presence subscription: written after every welcome (the server keeps subscriptions only while a device is
   * connected), under a ref that changes with each subscribePresence() so answers to an older list are ignored.
   */
  private presenceSub: { ref: string; users: string[] } | null = null;
  /** A presence visibility change not yet written. */
  private pendingVisibility: PresenceVisibility | undefined;
  private detachPageHooks: (() => void) | null = null;
  /** Server ids of this client's acked sends whose `sent` entry has not come back yet (client/sync.ts). */
  private readonly ownSent = new OwnSends();

  constructor(opts: IrisClientOptions) {
    if (!ID_PATTERN.test(opts.device)) {
      throw new IrisError('invalid_field', `device: expected 1-${LIMITS.maxIdLength} chars of [A-Za-z0-9._@+=-]`);
    }
    this.device = opts.device;
    const report = (e: IrisError): void => this.events.emit('error', e);
    const listenerFailed = (e: unknown): void => report(new IrisError('internal', `event listener threw: ${errText(e)}`));
    this.conn = new Connection(opts, {
      prepare: () => this.load(),
      hello: () => ({ cursor: this.inbox.cursor, receipts: this.inbox.receipts, reads: this.inbox.reads }),
      welcomed: (gen, w, helloCursor) => this.inbox.resume(gen, w.cursor, helloCursor),
      opened: (w) => {
        this.outbox.pump();
        this.queries.rewrite();
        this.groups.rewrite();
        this.keyDir.rewrite();
        this.writeReads();
        this.writePresence();
        this.events.emit('welcome', w, listenerFailed);
      },
      frame: (f, gen) => this.onFrame(f, gen),
      down: () => {
        this.inbox.cancelAck();
        this.typingState.down();
      },
      stopped: (err) => {
        this.outbox.stop();
        this.detachPageHooks?.();
        this.detachPageHooks = null;
        // A refused token ends pending sends with that error; other endings with 'closed'.
        const sendErr =
          err.code === 'auth_failed'
            ? err
            : new IrisError('closed', `connection closed: ${err.message}`, err.closeCode !== undefined ? { closeCode: err.closeCode } : {});
        this.outbox.rejectAll(sendErr);
        this.queries.rejectAll(sendErr);
        this.groups.rejectAll(sendErr);
        this.keyDir.rejectAll(sendErr);
      },
      state: (s) => this.events.emit('state', s),
      error: report,
      inOrder: (task) => this.inbox.enqueue(task),
    });
    this.queue = new StoreQueue(opts.store ?? defaultStore(opts.device), report);
    this.inbox = new Inbox({
      queue: this.queue,
      link: this.conn,
      active: () => this.conn.active,
      isOwn: (msg) => this.ownSent.take(msg),
      // The server keeps at most 256 entries unacked per socket (protocol), so an ack batch must stay below it.
      ackEvery: Math.max(1, Math.min(opts.ack?.every ?? 32, 128)),
      ackDelayMs: Math.max(0, opts.ack?.delayMs ?? 50),
      listeners: {
        message: (m) => this.events.emitAsync('message', m),
        sent: (s) => this.events.emitAsync('sent', s),
        receipt: (r) => this.events.emitAsync('receipt', r),
        read: (r) => this.events.emitAsync('read', r),
        readState: (p) => this.events.emitAsync('readState', p),
        recovered: (r) => this.events.emitAsync('recovered', r),
        listenerFailed,
        error: report,
      },
    });
    this.outbox = new Outbox({
      queue: this.queue,
      link: this.conn,
      maxOutbox: Math.max(1, opts.maxOutbox ?? 1000),
      retry: opts.retry ?? {},
      events: {
        ack: (e) => {
          this.ownSent.add(e.msg);
          this.events.emit('ack', e, listenerFailed);
        },
        retry: (e) => this.events.emit('retry', e, listenerFailed),
        error: report,
      },
    });
    this.queries = new PresenceQueries(this.conn, opts.requestTimeoutMs ?? 10_000);
    this.keyDir = new KeyDirectory(this.conn, this.ids, opts.requestTimeoutMs ?? 10_000, (e) => this.events.emit('keysLow', e, listenerFailed));
    this.typingState = new TypingIndicators(this.conn, (e) => this.events.emit('typing', e, listenerFailed), {
      renewMs: Math.max(100, opts.typing?.renewMs ?? 1_500),
      idleMs: Math.max(100, opts.typing?.idleMs ?? 3_000),
    });
    this.groups = new Groups({
      link: this.conn,
      queue: this.queue,
      emitMessage: (m) => this.events.emitAsync('groupMessage', m).then(() => undefined),
      emitEvent: (e) => this.events.emitAsync('groupEvent', e).then(() => undefined),
      emitAck: (a) => this.events.emit('groupAck', a, listenerFailed),
    });
  }

  get state(): ConnectionState {
    return this.conn.state;
  }

  /**
   * Highest sequence number handed out to the app (recorded in the store before any listener saw it): no entry
   * at or below it is ever emitted as `message` / `receipt` again by a client on the same store.
   */
  get cursor(): number {
    return this.inbox.cursor;
  }

  /** Sends not yet acknowledged by the server. */
  get pending(): number {
    return this.outbox.size;
  }

  on<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    return this.events.on(event, fn);
  }

  once<K extends keyof ClientEvents>(event: K, fn: Listener<ClientEvents[K]>): () => void {
    return this.events.once(event, fn);
  }

  /**
   * Opens the connection. Resolves with the welcome. If the very first attempt fails (refused token, server
   * unreachable, no welcome in time) it rejects and the client stays closed — except a 401 with a token
   * callback, which is asked for a new token first. Once connected, drops are repaired by reconnecting with
   * backoff (at least the server's Retry-After), except after close code 4001 (replaced) or auth_failed.
   */
  connect(): Promise<Welcome> {
    this.detachPageHooks ??= attachPageHooks(() => {
      this.inbox.flushAck();
      this.flushStore();
    });
    return this.conn.connect();
  }

  /**
   * Closes the connection and stops reconnecting. Processed deliveries are acked first. Pending send() and
   * presence() promises reject with code 'closed'; unacknowledged sends stay in the store and are resent by
   * the next connect() (of this or a later client with the same store).
   */
  async close(): Promise<void> {
    this.outbox.stop();
    this.detachPageHooks?.();
    this.detachPageHooks = null;
    this.flushStore();
    this.inbox.flushAck();
    this.groups.flushAcks();
    const err = new IrisError('closed', 'client closed');
    this.typingState.close();
    const closed = this.conn.close(err);
    this.outbox.rejectAll(err);
    this.queries.rejectAll(err);
    this.groups.rejectAll(err);
    this.keyDir.rejectAll(err);
    await closed;
  }

  /**
   * Sends a message. Resolves when the server has durably accepted it (a retry of an accepted id resolves
   * with dup = true and the original server id). Rejects with IrisError for error frames about it.
   * While disconnected the send waits in the outbox and goes out (with the same id) after the next welcome.
   */
  send(to: string, body: Uint8Array | string, opts: { id?: string; ref?: IrisRef } = {}): Promise<SendAck> {
    if (!ID_PATTERN.test(to)) return Promise.reject(new IrisError('invalid_field', `to: not a valid user id`));
    const ref = opts.ref;
    if (ref !== undefined && (!Object.hasOwn(REF_KINDS, ref.kind) || typeof ref.msg !== 'string' || ref.msg.length === 0 || ref.msg.length > LIMITS.maxMessageIdLength)) {
      return Promise.reject(new IrisError('invalid_field', 'ref: expected a kind (reply, edit, delete, react) and a server message id'));
    }
    const bytes = typeof body === 'string' ? utf8.encode(body) : body.slice();
    if (bytes.byteLength > LIMITS.maxBodyBytes) {
      return Promise.reject(new IrisError('frame_too_large', `body: ${bytes.byteLength} bytes exceeds ${LIMITS.maxBodyBytes}`));
    }
    const id = opts.id ?? this.ids.next('m');
    if (!CLIENT_ID_PATTERN.test(id)) return Promise.reject(new IrisError('invalid_field', 'id: expected 1-64 visible ASCII chars'));
    if (this.conn.closed) return Promise.reject(new IrisError('closed', 'client is closed; call connect() first', { ref: id }));
    return this.outbox.add(id, to, bytes, ref && { kind: ref.kind, msg: ref.msg });
  }

  /*
   * Message references (docs/PROTOCOL.md 9.11): messages that refer to an earlier one by its server message id (an
   * IrisMessage's `msg`, or a SendAck's). Each is a send like any other (acked, retried, idempotent); the server
   * refuses what the user may not do with ref_not_allowed (an edit or delete of someone else's message, a message
   * of another conversation), ref_expired (past the edit or delete window) or bad_ref (no such message).
   */

  /** Replies to message `msg` of the conversation with `to`. */
  reply(to: string, msg: string, body: Uint8Array | string, opts: { id?: string } = {}): Promise<SendAck> {
    return this.send(to, body, { ...opts, ref: { kind: 'reply', msg } });
  }

  /** Replaces the content of this user's own message `msg` to `to` (within the server's edit window). */
  edit(to: string, msg: string, body: Uint8Array | string, opts: { id?: string } = {}): Promise<SendAck> {
    return this.send(to, body, { ...opts, ref: { kind: 'edit', msg } });
  }

  /** Deletes this user's own message `msg` to `to` for everyone (within the server's delete window). */
  deleteForEveryone(to: string, msg: string, opts: { id?: string } = {}): Promise<SendAck> {
    return this.send(to, new Uint8Array(0), { ...opts, ref: { kind: 'delete', msg } });
  }

  /** Reacts to message `msg` of the conversation with `to` (an emoji); '' removes this user's reaction. */
  react(to: string, msg: string, reaction: string, opts: { id?: string } = {}): Promise<SendAck> {
    return this.send(to, reaction, { ...opts, ref: { kind: 'react', msg } });
  }

  /** Online state and last-seen time of up to 32 users. */
  presence(users: string[]): Promise<PresenceInfo[]> {
    if (users.length === 0) return Promise.resolve([]);
    if (users.length > LIMITS.maxPresenceUsers) {
      return Promise.reject(new IrisError('invalid_field', `users: at most ${LIMITS.maxPresenceUsers}`));
    }
    for (const u of users) if (!ID_PATTERN.test(u)) return Promise.reject(new IrisError('invalid_field', `users: "${u}" is not a valid user id`));
    if (this.conn.closed) return Promise.reject(new IrisError('closed', 'client is closed'));
    return this.queries.ask(this.ids.next('p'), users);
  }

  /**
   * Marks conversation `conv` read up to and including `msg` (a message `conv` sent to this user, as delivered in
   * a `message` event): cumulative, so marking the newest message read marks the whole conversation. Written now
   * if connected, else after the next welcome (only the newest mark per conversation). The user's devices get a
   * `readState` event; the sender gets a `read` event unless this user turned read receipts off. Refusals
   * (a message not delivered to this connection) arrive as `error` events (bad_ack).
   */
  markRead(conv: string, msg: string): void {
    if (!ID_PATTERN.test(conv)) throw new IrisError('invalid_field', 'conv: not a valid user id');
    if (!MSG_OF(conv, msg) || msg.length > LIMITS.maxMessageIdLength) throw new IrisError('invalid_field', `msg: not a message id of ${conv}`);
    this.pendingReads.set(conv, msg);
    this.writeReads();
  }

  /** Turns sending read receipts on or off for this user (all its devices); a `settings` event confirms it. */
  setReadReceipts(on: boolean): void {
    this.pendingReadReceipts = on;
    this.writeReads();
  }

  /** The user's read receipt setting as last told by the server; undefined before the first welcome. */
  get readReceipts(): boolean | undefined {
    return this.readReceiptsValue;
  }

  /**
   * Follows the presence of `users` (replacing the previous list; empty: none; at most 1000, or the server's
   * lower cap, which refuses more with an `error` event, invalid_field). Their current state arrives at once
   * as `presence` events, then one event per change (online; offline with last seen, after the server's hold).
   * Users who hide their presence from this user produce no event. Kept across reconnects: the list is sent
   * again after every welcome, and the answer repairs whatever changed while disconnected.
   */
  subscribePresence(users: string[]): void {
    if (users.length > LIMITS.maxPresenceSubscriptions) throw new IrisError('invalid_field', `users: at most ${LIMITS.maxPresenceSubscriptions}`);
    for (const u of users) if (!ID_PATTERN.test(u)) throw new IrisError('invalid_field', `users: "${u}" is not a valid user id`);
    this.presenceSub = { ref: this.ids.next('s'), users: [...users] };
    this.writePresence();
  }

  /**
   * Who may see this user's presence and last seen: 'everyone' (the default), 'contacts' or 'nobody'. A `settings`
   * event on every device of the user (this one included) confirms it.
   */
  setPresenceVisibility(visibility: PresenceVisibility): void {
    this.pendingVisibility = visibility;
    this.writePresence();
  }

  /**
   * Tells `peer` this user is typing to it (on) or stopped (off). Ephemeral: written only while connected
   * (never queued), at most one `on` per renewMs per conversation, an `off` only after an `on`. Call it with
   * true again while the user keeps typing, or use typingInput() on each keystroke. The peer's devices get a
   * `typing` event; nothing reaches this user's own other devices.
   */
  typing(peer: string, on = true): void {
    if (!ID_PATTERN.test(peer)) throw new IrisError('invalid_field', 'conv: not a valid user id');
    this.typingState.set(peer, on);
  }

  /** Key directory (PROTOCOL.md 8.9, client/keys.ts): publishes this device's keys; resolves with its pool's size. */
  uploadKeys(keys: KeysInput): Promise<KeysStateInfo> {
    return this.keyDir.upload(keys);
  }

  /** `user`'s bundle, one entry per device, each with a one-time prekey that no other fetcher gets (none: pool empty). */
  fetchBundle(user: string): Promise<KeyBundleEntry[]> {
    return this.keyDir.fetchBundle(user);
  }

  /** The ids of `user`'s devices that published keys: encrypt for each of them. */
  devices(user: string): Promise<string[]> {
    return this.keyDir.devices(user);
  }

  /** A keystroke in the conversation with `peer`: typing(peer) now (renewed as needed), off after a pause. */
  typingInput(peer: string): void {
    if (!ID_PATTERN.test(peer)) throw new IrisError('invalid_field', 'conv: not a valid user id');
    this.typingState.input(peer);
  }

  // ------------------------------------------------------------------ groups (PROTOCOL.md 9.11)

  /** Creates a group (its id: `group`, or a random one) with `members` besides this user, who is its admin. */
  createGroup(name: string, members: string[], opts: { group?: string; id?: string } = {}): Promise<GroupAckResult> {
    const group = opts.group ?? this.ids.next('g');
    return this.groupRequest(opts.id, (id) => ({ t: 'group_create', id, group, name, members: [...members] }), members);
  }
  addMembers(group: string, members: string[], opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.groupRequest(opts.id, (id) => ({ t: 'group_add', id, group, members: [...members] }), members);
  }
  removeMember(group: string, member: string, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.groupRequest(opts.id, (id) => ({ t: 'group_remove', id, group, member }));
  }
  leaveGroup(group: string, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.groupRequest(opts.id, (id) => ({ t: 'group_leave', id, group }));
  }
  setRole(group: string, member: string, admin: boolean, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.groupRequest(opts.id, (id) => ({ t: 'group_role', id, group, member, admin }));
  }
  updateGroup(group: string, name: string, meta: Uint8Array = new Uint8Array(0), opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.groupRequest(opts.id, (id) => ({ t: 'group_update', id, group, name, meta: meta.slice() }));
  }

  /** Resolves once durable in the group's log (its seq); rewritten after reconnects until answered (dup on a retry). */
  sendToGroup(group: string, body: Uint8Array | string, opts: { id?: string; ref?: { kind: RefKind; seq: number } } = {}): Promise<GroupAckResult> {
    const bytes = typeof body === 'string' ? utf8.encode(body) : body.slice();
    if (bytes.byteLength > LIMITS.maxBodyBytes) return Promise.reject(new IrisError('frame_too_large', `body: ${bytes.byteLength} bytes exceeds ${LIMITS.maxBodyBytes}`));
    const r = opts.ref;
    if (r && (!Number.isSafeInteger(r.seq) || r.seq <= 0 || !Object.hasOwn(REF_KINDS, r.kind))) return Promise.reject(new IrisError('invalid_field', 'ref: expected a kind and the seq of a group message'));
    return this.groupRequest(opts.id, (id) => ({ t: 'group_send', id, group, body: bytes, ...(r && { ref: { kind: r.kind, msg: String(r.seq) } }) }));
  }
  /** Replies to / edits / deletes for everyone / reacts to message `seq` of a group (PROTOCOL.md 9.11). */
  groupReply(group: string, seq: number, body: Uint8Array | string, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.sendToGroup(group, body, { ...opts, ref: { kind: 'reply', seq } });
  }
  groupEdit(group: string, seq: number, body: Uint8Array | string, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.sendToGroup(group, body, { ...opts, ref: { kind: 'edit', seq } });
  }
  groupDelete(group: string, seq: number, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.sendToGroup(group, new Uint8Array(0), { ...opts, ref: { kind: 'delete', seq } });
  }
  groupReact(group: string, seq: number, reaction: string, opts: { id?: string } = {}): Promise<GroupAckResult> {
    return this.sendToGroup(group, reaction, { ...opts, ref: { kind: 'react', seq } });
  }

  /** The group's members and roles (members only; others get not_member). */
  roster(group: string): Promise<RosterResult> {
    if (!ID_PATTERN.test(group)) return Promise.reject(new IrisError('invalid_field', 'group: not a valid group id'));
    if (this.conn.closed) return Promise.reject(new IrisError('closed', 'client is closed'));
    return this.groups.roster(this.ids.next('r'), group);
  }
  /** Marks `group` read up to `seq` (no further than this device processed): senders can ask who read what. */
  markGroupRead(group: string, seq: number): void {
    this.groups.markRead(group, seq);
  }
  /** Who received and read a message this user sent to a group (the sender only; others get bad_state). */
  groupReceipts(group: string, seq: number): Promise<GroupReceiptsResult> {
    if (this.conn.closed) return Promise.reject(new IrisError('closed', 'client is closed'));
    return this.groups.receipts(this.ids.next('q'), group, seq);
  }
  /** How far the app processed a group (entries at or below are dropped). */
  groupCursor(group: string): number {
    return this.groups.cursor(group);
  }

  private groupRequest(id: string | undefined, make: (id: string) => Parameters<Groups['request']>[1], members: string[] = []): Promise<GroupAckResult> {
    const cid = id ?? this.ids.next('m');
    const frame = make(cid);
    const bad = checkRequest(cid, frame, members) ?? (this.conn.closed ? new IrisError('closed', 'client is closed; call connect() first', { ref: cid }) : null);
    return bad ? Promise.reject(bad) : this.groups.request(cid, frame);
  }

  /** Resolves once every send in the outbox has been acknowledged or refused. */
  drain(): Promise<void> {
    return this.outbox.drain();
  }

  // ------------------------------------------------------------------ wiring

  /** Loads the store once (again after a failure): cursor and unfinished entries to the inbox, sends to the outbox. */
  private load(): Promise<void> {
    if (!this.loaded) {
      this.loaded = (async () => {
        const st = await this.queue.store.load();
        this.inbox.restore(st);
        this.outbox.restore(st.outbox);
        this.groups.restore(st.groups, st.groupOutbox);
      })();
      this.loaded.catch(() => {
        this.loaded = null;
      });
    }
    return this.loaded;
  }

  /** A frame from the welcomed socket `gen`. */
  private onFrame(f: ServerFrame, gen: number): void {
    switch (f.t) {
      case 'send_ack':
        return this.outbox.acked(f);
      case 'deliver':
        return this.inbox.deliver(gen, f.entries);
      case 'receipts':
        return this.inbox.receiptsFrame(f);
      case 'read_state':
        return this.inbox.readStateFrame(f);
      case 'settings':
        this.readReceiptsValue = f.readReceipts;
        return this.events.emit('settings', { readReceipts: f.readReceipts, ...(f.presence !== undefined && { presence: f.presence }) });
      case 'presence':
        if (this.presenceSub !== null && f.ref === this.presenceSub.ref) {
          for (const u of f.users) this.events.emit('presence', { user: u.user, online: u.online, lastSeen: u.lastSeen });
          return;
        }
        return this.queries.answered(f);
      case 'group_send_ack':
        return this.groups.acked(f);
      case 'group_deliver':
        return this.groups.deliver(f, gen);
      case 'group_roster':
        return this.groups.rosterPage(f);
      case 'group_receipts':
        return this.groups.receiptsPage(f);
      case 'group_read':
        return this.events.emit('groupRead', { group: f.group, seq: f.seq });
      case 'error':
        return this.onError(f, gen);
      case 'typing_state':
        return this.typingState.frame(f);
      case 'keys_state':
      case 'keys_bundle':
      case 'devices':
        return this.keyDir.frame(f);
      default:
        // pong (liveness is tracked for every frame), welcome (Connection's); client frames are ignored.
        return;
    }
  }

  private onError(f: ErrorFrame, gen: number): void {
    const err = errorOfFrame(f);
    if (f.ref !== undefined) {
      if (this.outbox.refused({ ...f, ref: f.ref })) return;
      if (this.queries.refused(f.ref, err) || this.keyDir.refused(f.ref, err)) return;
      if (this.groups.refused({ ...f, ref: f.ref })) return;
      // A "not now" for a send already acked: the answer to an extra copy of it (written again after a
      // frame-rate refusal, say). Nothing to do.
      if (this.outbox.isLateRefusal(f)) return;
    }
    // The connection's frame rate (no ref): the refused frame was not read, and it may have been a send.
    // Everything in flight is written again, in order, after retryAfter (the server dedups what it had).
    if (f.code === 'rate_limited') this.outbox.frameRateRefused(gen, f.retryAfter);
    this.events.emit('error', err);
  }

  /** Writes the read marks and the setting that waited for a connection. */
  private writeReads(): void {
    const link = this.conn.current();
    if (link === null) return;
    if (this.pendingReadReceipts !== undefined) link.write({ t: 'set_settings', readReceipts: this.pendingReadReceipts });
    this.pendingReadReceipts = undefined;
    for (const [conv, msg] of this.pendingReads) link.write({ t: 'read', conv, msg });
    this.pendingReads.clear();
  }

  /** Writes the presence setting and subscription (again after every welcome). */
  private writePresence(): void {
    const link = this.conn.current();
    if (link === null) return;
    if (this.pendingVisibility !== undefined) link.write({ t: 'set_presence', visibility: this.pendingVisibility });
    this.pendingVisibility = undefined;
    if (this.presenceSub !== null) link.write({ t: 'presence_subscribe', ref: this.presenceSub.ref, users: this.presenceSub.users });
  }

  /** Writes what the store deferred (handled marks); errors are reported, not thrown. */
  private flushStore(): void {
    if (this.queue.store.flush) this.queue.run((st) => st.flush!());
  }
}
