/**
 * A small terminal chat over the SDK.
 *
 *   npm run chat -- alice bob [--onprem | --port N | --url ws://127.0.0.1:8787/v1/connect] [--device NAME]
 *                            [--token JWT] [--ttl 24h] [--json]
 *
 * Without --url it connects to 127.0.0.1: `npm start`'s port (8787), `npm run onprem`'s with --onprem (8788),
 * or --port N (an on-prem server started with --port 0 prints the one it got).
 * Connects as alice (minting a dev token unless --token or IRIS_TOKEN is given) and sends each stdin line to
 * bob. Incoming messages print with time and sender; "✓" marks a message the server stored, "✓✓" one that
 * reached a device of its recipient, "✓✓ read" one its recipient read (unless they turned read receipts off). The device's cursor and unsent messages live in
 * ./.iris/<user>-<device>.json, so a restarted chat resumes where it stopped, with nothing lost or repeated.
 *
 * Messages you sent from another device (another chat with a different --device) print as "me -> bob: text".
 * The peer's presence is followed (subscribePresence): "bob is online" / "bob was last seen ..." as it changes.
 * Typing: on a terminal, editing a line tells the peer "typing" (typingInput on each keystroke; off after a
 * pause or when the line is sent); "bob is typing…" shows when the peer types. With stdin a pipe, /typing.
 * Commands: /read (mark what the peer sent read)  /receipts on|off  /presence [user...]
 *           /visibility everyone|contacts|nobody (who sees your presence)  /typing [off]  /quit  /help
 *           /reply N text  /edit N text  /delete N  /react N emoji (no emoji: remove yours)
 *           /keys [N] (publish a DEMO key bundle of random bytes with N one-time prekeys: this CLI is not an
 *           end-to-end-encryption client and sends in the clear)  /bundle USER (fetch USER's key bundle: its
 *           devices, key ids, and whether a one-time prekey came with each)
 * Every message shown (received, or sent and stored) gets a short index #N for those commands; an edit, a delete
 * or a reaction is shown against the message it refers to.
 * Groups (scripts/lib/chat-groups.ts): /group create GROUP user...  /group add|remove GROUP user...
 *           /group leave GROUP  /group admin GROUP user on|off  /group rename GROUP NAME  /group roster GROUP
 *           /group read GROUP (mark it read)  /group info GROUP SEQ (who received / read your message)
 *           /g GROUP text (send to a group); group messages print as "GROUP | sender: text".
 * stdin may be a pipe: at end of input the chat waits for the acks of what it sent (and briefly for delivery
 * receipts, see --linger), then exits.
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { IrisClient, IrisError, type ConnectionState, type IrisMessage, type IrisOutgoing, type IrisRef } from '../client/index.js';
import { FileStore } from '../client/node-store.js';
import { ID_PATTERN } from '../protocol/limits.js';
import { ONPREM_PORT, WRANGLER_PORT, connectUrl } from './lib/endpoints.js';
import { GROUP_HELP, groupCommand, groupRef, showGroups } from './lib/chat-groups.js';
import { mintToken } from './token.js';
import { printBundle, uploadDemoKeys } from './chat-keys.js';

const USAGE = `usage: npm run chat -- <user> <peer> [--onprem | --port N | --url ws://127.0.0.1:8787/v1/connect]
                     [--device NAME] [--token JWT] [--ttl 24h] [--json] [--dir ./.iris] [--linger MS]
  (no --url: npm start's port ${WRANGLER_PORT}; --onprem: npm run onprem's ${ONPREM_PORT}; --port N: 127.0.0.1:N)`;

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  allowPositionals: true,
  options: {
    url: { type: 'string' },
    port: { type: 'string' },
    onprem: { type: 'boolean' },
    device: { type: 'string', default: 'cli' },
    token: { type: 'string' },
    ttl: { type: 'string', default: '24h' },
    json: { type: 'boolean', default: false },
    dir: { type: 'string', default: '.iris' },
    linger: { type: 'string', default: '2000' },
    help: { type: 'boolean', short: 'h' },
  },
});

const [user, peer] = positionals;
if (values.help || user === undefined || peer === undefined || positionals.length > 2) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(values.help ? 0 : 2);
}
for (const [what, v] of [['user', user], ['peer', peer], ['device', values.device]] as const) {
  if (!ID_PATTERN.test(v)) {
    process.stderr.write(`chat: ${what} "${v}": expected 1-64 chars of [A-Za-z0-9._@+=-]\n`);
    process.exit(2);
  }
}
let url: string;
try {
  url = connectUrl(values);
} catch (e) {
  process.stderr.write(`chat: ${(e as Error).message}\n`);
  process.exit(2);
}
const device = values.device;
const lingerMs = Number(values.linger);

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const clock = (ms: number): string => new Date(ms).toTimeString().slice(0, 8);
const short = (s: string): string => (s.length > 40 ? `${s.slice(0, 37)}...` : s);

const store = new FileStore(join(values.dir, `${user}-${device}.json`));
store.setMeta('user', user);
store.setMeta('device', device);

const fixedToken = values.token ?? process.env['IRIS_TOKEN'];
const client = new IrisClient({
  url,
  device,
  store,
  encoding: values.json ? 'json' : 'binary',
  // A function, so every reconnect gets a fresh dev token, and the SDK refreshes it on the live connection before
  // it expires (--ttl 30s shows it: no reconnect). A revoked token's close prints why, and the next token is new.
  token: fixedToken !== undefined ? fixedToken : () => mintToken(user, { ttl: values.ttl }),
});

/** Text of what we sent, by client id (from this run or resumed from the store) and then by server id. */
const textById = new Map<string, string>();
const textByMsg = new Map<string, string>();
/** Per peer, the server ids of our acked messages not yet covered by a (cumulative) receipt, in ack order. */
const unreceipted = new Map<string, string[]>();
const decoder = new TextDecoder();
for (const p of store.load().outbox) textById.set(p.id, decoder.decode(p.body));
let awaitingReceipts = 0;
let stopping = false;

let started = false;
client.on('state', (s: ConnectionState) => {
  out(`* ${s}`);
  // After connect() resolved, 'closed' without /quit means the client gave up (replaced by another chat on
  // this device, or the token was refused): nothing more can happen here.
  if (s === 'closed' && started && !stopping) setTimeout(() => process.exit(1), 50);
});
client.on('welcome', (w) => out(`* signed in as ${w.user} on device ${w.device} (resuming after #${w.cursor}, inbox head #${w.head})`));
/** The newest message the peer sent us that was shown: what /read marks. */
let lastFromPeer: string | null = null;

/**
 * Short indexes of the messages shown (#N), for /reply, /edit, /delete and /react: server id <-> index, text. Kept
 * in the store's meta (the newest SHOWN_KEPT), so a restarted chat names the same messages by the same numbers.
 */
const SHOWN_KEPT = 500;
let shown: { msg: string; from: string; text: string }[] = [];
let shownBase = 0;
const indexOf = new Map<string, number>();
try {
  const kept = JSON.parse(store.getMeta('shown') ?? 'null') as { base: number; list: typeof shown } | null;
  if (kept) {
    shownBase = kept.base;
    shown = kept.list;
    shown.forEach((m, i) => indexOf.set(m.msg, shownBase + i + 1));
  }
} catch {
  // an unreadable list starts again at #1
}
const shownAt = (i: number) => shown[i - shownBase - 1];
function saveShown(): void {
  store.setMeta('shown', JSON.stringify({ base: shownBase, list: shown }));
}
function remember(msg: string, from: string, text: string): number {
  const known = indexOf.get(msg);
  if (known !== undefined) return known;
  shown.push({ msg, from, text });
  while (shown.length > SHOWN_KEPT) {
    indexOf.delete(shown.shift()!.msg);
    shownBase++;
  }
  const i = shownBase + shown.length;
  indexOf.set(msg, i);
  saveShown();
  return i;
}
function setText(msg: string, from: string, text: string): void {
  const i = indexOf.get(msg);
  const m = i === undefined ? undefined : shownAt(i);
  if (m === undefined || m.from !== from) return;
  m.text = text;
  saveShown();
}
/** How a referred-to message is named on screen: its index and a quote, or its server id if never shown here. */
function target(msg: string): string {
  const i = indexOf.get(msg);
  const m = i === undefined ? undefined : shownAt(i);
  return m === undefined ? msg : `#${i} "${short(m.text)}"`;
}
/** One line for a message that refers to another (PROTOCOL.md 9.9), or null for a plain one. */
function refLine(m: IrisMessage, ref: IrisRef): string {
  const at = `[${clock(m.ts)}]`;
  switch (ref.kind) {
    case 'reply':
      return `${at} #${remember(m.msg, m.from, m.text())} ${m.from} ↪ ${target(ref.msg)}: ${m.text()}`;
    case 'edit': {
      const line = `${at} ${m.from} edited ${target(ref.msg)}: ${m.text()}`;
      // The server guarantees an edit comes from the target's sender; setText checks it again against what is shown.
      setText(ref.msg, m.from, m.text());
      return line;
    }
    case 'delete':
      return `${at} ${m.from} deleted ${target(ref.msg)} for everyone`;
    case 'react':
      return m.body.length === 0 ? `${at} ${m.from} removed their reaction to ${target(ref.msg)}` : `${at} ${m.from} reacted ${m.text()} to ${target(ref.msg)}`;
  }
}
function showMessage(m: IrisMessage, suffix = ''): void {
  if (m.ref) return out(refLine(m, m.ref) + suffix);
  out(`[${clock(m.ts)}] #${remember(m.msg, m.from, m.text())} ${m.from}: ${m.text()}${suffix}`);
}
client.on('message', (m) => {
  if (m.from === peer) lastFromPeer = m.msg;
  showMessage(m);
});
// Multi-device sync (PROTOCOL.md 9.10): what this user sent from another device, in the conversation's order.
function showSent(s: IrisOutgoing, suffix = ''): void {
  if (s.ref) return out(refLine({ seq: s.seq, msg: s.msg, from: user!, ts: s.ts, body: s.body, text: s.text }, s.ref) + suffix);
  out(`[${clock(s.ts)}] #${remember(s.msg, user!, s.text())} me -> ${s.to}: ${s.text()}${suffix}`);
}
client.on('sent', (s) => showSent(s));
// Cumulative, like delivery receipts: one line for everything up to r.msg.
client.on('read', (r) => out(`  ✓✓ read by ${r.by} up to ${r.msg} at ${clock(r.ts)}`));
client.on('readState', (p) => out(`* ${p.conv} read up to ${p.msg} (on one of your devices)`));
client.on('settings', (x) => out(`* read receipts are ${x.readReceipts ? 'on' : 'off'}${x.presence ? `; presence visible to ${x.presence}` : ''}`));
// Shown by an earlier run that stopped before it finished printing them (the terminal may or may not have them).
client.on('recovered', (r) => {
  if (r.kind === 'message') showMessage(r.message, '  (again: the last run stopped while showing it)');
  if (r.kind === 'sent') showSent(r.sent, '  (again: the last run stopped while showing it)');
});
client.on('retry', (r) => out(`  … "${short(textById.get(r.id) ?? '')}" held by the server (${r.code}); resending in ${r.retryAfter} ms`));
client.on('ack', (a) => {
  const text = textById.get(a.id) ?? '';
  textById.delete(a.id);
  textByMsg.set(a.msg, text);
  if (!a.dup) {
    awaitingReceipts++;
    const list = unreceipted.get(a.to) ?? [];
    list.push(a.msg);
    unreceipted.set(a.to, list);
  }
  const ref = refById.get(a.id);
  refById.delete(a.id);
  // Our own messages get an index too (a reply, an edit, a delete or a reaction is named after its target).
  const how = { reply: '↪', edit: 'edit of', delete: 'delete of', react: 'reaction to' } as const;
  const own = !ref || ref.kind === 'reply' ? `#${remember(a.msg, user!, text)}` : '';
  const label = ref ? `${own}${own && ' '}${how[ref.kind]} ${target(ref.msg)}` : own;
  if (ref?.kind === 'edit') setText(ref.msg, user!, text);
  out(`  ✓ ${label} "${short(text)}" -> ${a.to} (${a.msg}${a.dup ? ', already stored' : ''})`);
});
client.on('receipt', (r) => {
  // Cumulative: r.msg and every message acked to r.by before it were delivered.
  const list = unreceipted.get(r.by) ?? [];
  const upTo = list.indexOf(r.msg);
  const covered = upTo >= 0 ? list.splice(0, upTo + 1) : [r.msg];
  for (const msg of covered) {
    const text = textByMsg.get(msg);
    if (text !== undefined) awaitingReceipts = Math.max(0, awaitingReceipts - 1);
    textByMsg.delete(msg);
    out(`  ✓✓ "${short(text ?? msg)}" delivered to ${r.by} at ${clock(r.ts)}`);
  }
});
client.on('error', (e) => out(`! ${e.code}: ${e.message}`));
client.on('keysLow', (k) => out(`* ${k.device} has ${k.count} one-time prekey(s) left; /keys uploads more`));
client.on('typing', (t) => out(t.on ? `* ${t.from} is typing…` : `* ${t.from} stopped typing`));
showGroups(client, out, clock, { remember, target, setText });
client.on('presence', (p) => {
  if (p.online) return out(`* ${p.user} is online`);
  out(`* ${p.user} ${p.lastSeen === 0 ? 'was never seen' : `was last seen ${new Date(p.lastSeen).toLocaleString()}`}`);
});

async function presence(users: string[]): Promise<void> {
  try {
    for (const p of await client.presence(users)) {
      const when = p.lastSeen === 0 ? 'never seen' : `last seen ${new Date(p.lastSeen).toLocaleString()}`;
      out(`* ${p.user} is ${p.online ? 'online' : 'offline'}${p.online ? '' : ` (${when})`}`);
    }
  } catch (e) {
    out(`! presence: ${e instanceof IrisError ? `${e.code}: ${e.message}` : String(e)}`);
  }
}

/** The reference of each of our sends still waiting for its ack (they resume from the store without it: plain). */
const refById = new Map<string, IrisRef>();

function send(text: string, ref?: IrisRef): void {
  client.typing(peer!, false);
  const id = `cli-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  textById.set(id, text);
  if (ref) refById.set(id, ref);
  client.send(peer!, text, { id, ...(ref && { ref }) }).catch((e: unknown) => {
    textById.delete(id);
    refById.delete(id);
    const err = e instanceof IrisError ? `${e.code}: ${e.message}${e.retryAfter ? ` (retry in ${e.retryAfter} ms)` : ''}` : String(e);
    out(`! not sent "${short(text)}": ${err}`);
  });
}

async function stop(code: number): Promise<never> {
  if (!stopping) {
    stopping = true;
    await client.close();
  }
  process.exit(code);
}

process.on('SIGINT', () => void stop(130));
process.on('SIGTERM', () => void stop(143));

/** End of input: wait for our sends to be acked, then briefly for their receipts. */
async function finish(): Promise<never> {
  const deadline = (ms: number) => new Promise((r) => setTimeout(r, ms));
  await Promise.race([client.drain(), deadline(10_000)]);
  if (client.pending > 0) out(`! ${client.pending} message(s) not acked yet; they stay in ${store.path} and go out next time`);
  const until = Date.now() + lingerMs;
  while (awaitingReceipts > 0 && Date.now() < until) await deadline(50);
  return stop(0);
}

// Sent after every welcome by the SDK: the current state at once, then each change.
client.subscribePresence([peer!]);
try {
  await client.connect();
} catch (e) {
  out(`! could not connect to ${url}: ${e instanceof IrisError ? `${e.code}: ${e.message}` : String(e)}`);
  process.exit(1);
}
started = true;
out(`* chatting with ${peer}; type a line to send it, /presence, /help or /quit`);

// On a terminal readline edits the line itself (raw mode) and reports keystrokes: each one is "typing".
const tty = process.stdin.isTTY === true;
const rl = createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
if (tty) {
  process.stdin.on('keypress', (_s: string | undefined, key: { name?: string } | undefined) => {
    if (key?.name !== 'return' && key?.name !== 'enter') client.typingInput(peer!);
  });
}
let queue = Promise.resolve();
rl.on('line', (raw) => {
  const line = raw.trim();
  if (line === '') return;
  queue = queue.then(async () => {
    if (line === '/quit') return void (await stop(0));
    if (line === '/help') return out(`commands: /read  /receipts on|off  /presence [user...]  /visibility everyone|contacts|nobody  /typing [off]  /reply N text  /edit N text  /delete N  /react N [emoji]  /keys [N]  /bundle USER  ${GROUP_HELP}  /quit  (anything else is sent)`);
    if (line === '/typing' || line === '/typing off') return client.typing(peer!, line === '/typing');
    // Message references: N is the #N shown next to a message.
    const r = /^\/(reply|edit|delete|react)\s+#?(\d+)(?:\s+(.*))?$/.exec(line);
    if (r) {
      const kind = r[1] as IrisRef['kind'];
      const m = shownAt(Number(r[2]));
      if (m === undefined) return out(`! no message #${r[2]}`);
      const text = kind === 'delete' ? '' : (r[3] ?? '');
      if ((kind === 'reply' || kind === 'edit') && text === '') return out(`! /${kind} N text`);
      // A group message (#N shown in a group): the reference goes to that group.
      if (groupRef(client, m.msg, kind, text, out)) return;
      return send(text, { kind, msg: m.msg });
    }
    if (line === '/read') {
      if (lastFromPeer === null) return out(`! nothing from ${peer} to mark read yet`);
      return client.markRead(peer!, lastFromPeer);
    }
    if (line === '/receipts on' || line === '/receipts off') return client.setReadReceipts(line.endsWith('on'));
    const vis = /^\/visibility (everyone|contacts|nobody)$/.exec(line);
    if (vis) return client.setPresenceVisibility(vis[1] as 'everyone' | 'contacts' | 'nobody');
    if (line.startsWith('/presence')) {
      const users = line.split(/\s+/).slice(1);
      return presence(users.length > 0 ? users : [peer]);
    }
    if (await groupCommand(client, line, out)) return;
    // The key directory (scripts/chat-keys.ts): a demo of random bytes; the CLI does not encrypt.
    const k = /^\/keys(?:\s+(\d+))?$/.exec(line);
    if (k) return uploadDemoKeys(client, Math.min(100, Number(k[1] ?? 20)), out);
    const b = /^\/bundle\s+(\S+)$/.exec(line);
    if (b) return printBundle(client, b[1]!, out);
    if (line.startsWith('/')) return out(`! unknown command ${line.split(/\s+/)[0]}; /help lists them`);
    send(line);
  });
});
rl.on('close', () => {
  void queue.then(finish);
});
