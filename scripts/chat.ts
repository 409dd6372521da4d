/**
 * A small terminal chat over the SDK.
 *
 *   npm run chat -- alice bob [--onprem | --port N | --url ws://127.0.0.1:8787/v1/connect] [--device NAME]
 *                            [--token JWT] [--json]
 *
 * Without --url it connects to 127.0.0.1: `npm start`'s port (8787), `npm run onprem`'s with --onprem (8788),
 * or --port N (an on-prem server started with --port 0 prints the one it got).
 * Connects as alice (minting a dev token unless --token or IRIS_TOKEN is given) and sends each stdin line to
 * bob. Incoming messages print with time and sender; "✓" marks a message the server stored, "✓✓" one that
 * reached a device of its recipient, "✓✓ read" one its recipient read (unless they turned read receipts off). The device's cursor and unsent messages live in
 * ./.iris/<user>-<device>.json, so a restarted chat resumes where it stopped, with nothing lost or repeated.
 *
 * The peer's presence is followed (subscribePresence): "bob is online" / "bob was last seen ..." as it changes.
 * Commands: /read (mark what the peer sent read)  /receipts on|off  /presence [user...]
 *           /visibility everyone|contacts|nobody (who sees your presence)  /quit  /help
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
import { IrisClient, IrisError, type ConnectionState } from '../client/index.js';
import { FileStore } from '../client/node-store.js';
import { ID_PATTERN } from '../protocol/limits.js';
import { ONPREM_PORT, WRANGLER_PORT, connectUrl } from './lib/endpoints.js';
import { GROUP_HELP, groupCommand, showGroups } from './lib/chat-groups.js';
import { mintToken } from './token.js';

const USAGE = `usage: npm run chat -- <user> <peer> [--onprem | --port N | --url ws://127.0.0.1:8787/v1/connect]
                     [--device NAME] [--token JWT] [--json] [--dir ./.iris] [--linger MS]
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
  // A function, so every reconnect gets a fresh dev token.
  token: fixedToken !== undefined ? fixedToken : () => mintToken(user),
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
client.on('message', (m) => {
  if (m.from === peer) lastFromPeer = m.msg;
  out(`[${clock(m.ts)}] ${m.from}: ${m.text()}`);
});
// Cumulative, like delivery receipts: one line for everything up to r.msg.
client.on('read', (r) => out(`  ✓✓ read by ${r.by} up to ${r.msg} at ${clock(r.ts)}`));
client.on('readState', (p) => out(`* ${p.conv} read up to ${p.msg} (on one of your devices)`));
client.on('settings', (x) => out(`* read receipts are ${x.readReceipts ? 'on' : 'off'}`));
// Shown by an earlier run that stopped before it finished printing them (the terminal may or may not have them).
client.on('recovered', (r) => {
  if (r.kind === 'message') out(`[${clock(r.message.ts)}] ${r.message.from}: ${r.message.text()}  (again: the last run stopped while showing it)`);
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
  out(`  ✓ "${short(text)}" -> ${a.to} (${a.msg}${a.dup ? ', already stored' : ''})`);
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
showGroups(client, out, clock);
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

function send(text: string): void {
  const id = `cli-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  textById.set(id, text);
  client.send(peer!, text, { id }).catch((e: unknown) => {
    textById.delete(id);
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

const rl = createInterface({ input: process.stdin, terminal: false });
let queue = Promise.resolve();
rl.on('line', (raw) => {
  const line = raw.trim();
  if (line === '') return;
  queue = queue.then(async () => {
    if (line === '/quit') return void (await stop(0));
    if (line === '/help') return out(`commands: /read  /receipts on|off  /presence [user...]  /visibility everyone|contacts|nobody  ${GROUP_HELP}  /quit  (anything else is sent)`);
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
    if (line.startsWith('/')) return out(`! unknown command ${line.split(/\s+/)[0]}; /help lists them`);
    send(line);
  });
});
rl.on('close', () => {
  void queue.then(finish);
});
