/**
 * The web chat (README "Web chat"): plain DOM on the SDK as an app uses it, bundled by scripts/webchat-build.ts
 * into public/chat.js. Everything it keeps is in the SDK's IndexedDB store: the SDK's cursor and outbox, and the
 * history the page shows (webchat/history.ts, through the store's history rows). public/sw.js keeps the page
 * itself, so it opens without a network. In development mode the page gets tokens from /dev/token; elsewhere the
 * user pastes a token the app's own server minted.
 */
import { IndexedDbStore, IrisClient, type IrisError } from '../client/index.js';
import { GroupTicks } from './group-ticks.js';
import { History, msgNumber, type ChatMessage, type Conversation } from './history.js';
import { $, deviceId, login, tokenFn } from './login.js';

const el = (tag: string, cls?: string, text?: string): HTMLElement => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const TICKS = { failed: '⚠', pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓' } as const;
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/connect`;

async function start(me: string): Promise<void> {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me').textContent = me;
  // The user in the address: a reload of this tab stays this user while another tab signs in as someone else.
  window.history.replaceState(null, '', `/?user=${encodeURIComponent(me)}`);
  const device = deviceId(me);
  // The SDK's default store for this device (same database name), made here to reach its history rows.
  const store = new IndexedDbStore({ name: `iris-client-${device}` });
  let history: History;
  try {
    history = await History.open(me, store);
  } catch (e) {
    // No IndexedDB for this origin (storage disabled, or an older page of this user holds the database open
    // while it is upgraded): nothing could be kept, so the chat does not start.
    $('banner').hidden = false;
    $('banner').textContent = `This browser's storage cannot be opened (${(e as Error).message}); close other tabs of this chat and reload.`;
    return;
  }
  const pasted = sessionStorage.getItem(`webchat.token.${me}`);
  const client = new IrisClient({
    store,
    url: wsUrl,
    // A function: asked again before every reconnect, so an expired dev token is replaced by itself. A token
    // function that throws stops the SDK for good, so without a network it answers the last token it had
    // (the socket then fails as a network failure, retried) rather than throwing.
    token: pasted ?? tokenFn(me),
    device,
    reconnect: { baseMs: 250, maxMs: 4000 },
    heartbeatMs: 5000,
  });
  let open: string | null = null;
  const typing = new Map<string, string>(); // conv -> who is typing
  const presence = new Map<string, { online: boolean; lastSeen: number }>();
  (window as unknown as { iris: IrisClient }).iris = client;

  const ticks = new GroupTicks(client, history, () => render());
  const render = () => {
    // Started before anything the SDK writes after this handler: see History.save.
    history.save().catch((e: unknown) => console.warn('web chat: history not saved', e));
    renderList();
    renderConv();
    renderBanner();
  };
  const renderBanner = () => {
    const offline = client.state !== 'open' || !navigator.onLine;
    const queued = history.pending().length; // 1:1 and group sends, handed to the SDK or not yet
    $('banner').hidden = !offline;
    $('banner').textContent = offline
      ? `Offline — reconnecting…${queued ? ` ${queued} message${queued === 1 ? '' : 's'} queued, sent when back online.` : ''}`
      : '';
    $('status').textContent = client.state;
  };
  const status = (c: Conversation): string => {
    const t = typing.get(c.id);
    if (t) return c.kind === 'group' ? `${t} is typing…` : 'typing…';
    if (c.kind === 'group') return c.left ? 'you left this group' : 'group';
    const p = presence.get(c.id);
    if (!p) return '';
    return p.online ? 'online' : p.lastSeen ? `last seen ${new Date(p.lastSeen).toLocaleString()}` : 'offline';
  };
  const renderList = () => {
    const ul = $('convs');
    ul.replaceChildren();
    for (const c of history.list()) {
      const li = el('li', c.id === open ? 'conv active' : 'conv');
      li.dataset['conv'] = c.id;
      const online = c.kind === 'dm' && presence.get(c.id)?.online;
      li.append(el('span', online ? 'dot on' : 'dot'), el('span', 'name', c.kind === 'group' ? `# ${c.name}` : c.name));
      const last = c.msgs.at(-1);
      li.append(el('span', 'preview', typing.has(c.id) ? 'typing…' : (last?.text ?? '')));
      if (c.unread) li.append(el('span', 'unread', String(c.unread)));
      li.addEventListener('click', () => select(c.id));
      ul.append(li);
    }
  };
  const renderConv = () => {
    const c = open ? history.convs.get(open) : undefined;
    $('conv').hidden = !c;
    if (!c) return;
    $('peer').textContent = c.kind === 'group' ? `# ${c.name}` : c.name;
    $('peer-status').textContent = status(c);
    $('group-tools').hidden = c.kind !== 'group' || !!c.left;
    const box = $('messages');
    box.replaceChildren();
    for (const m of c.msgs) {
      const mine = m.from === me;
      const div = el('div', m.system ? 'msg system' : mine ? 'msg mine' : 'msg theirs');
      div.dataset['id'] = m.id;
      if (c.kind === 'group' && !mine && !m.system) div.append(el('div', 'from', m.from));
      div.append(el('span', 'text', m.text));
      const meta = el('span', 'meta', new Date(m.ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
      if (mine && m.tick) {
        const t = el('span', `tick ${m.tick}`, TICKS[m.tick]);
        t.dataset['tick'] = m.tick;
        meta.append(t);
      }
      div.append(meta);
      box.append(div);
    }
    box.scrollTop = box.scrollHeight;
  };
  /** Opening a conversation reads it: unread to 0 and the read position to its newest incoming message. */
  const readOpen = () => {
    const c = open ? history.convs.get(open) : undefined;
    if (!c || document.hidden) return;
    c.unread = 0;
    const last = [...c.msgs].reverse().find((m) => m.from !== me && !m.system);
    if (last && c.kind === 'dm' && last.msg) client.markRead(c.id, last.msg);
    if (last && c.kind === 'group' && last.seq !== undefined) client.markGroupRead(c.id, last.seq);
  };
  const select = (id: string) => {
    open = id;
    readOpen();
    render();
    $<HTMLInputElement>('text').focus();
  };
  const follow = () => client.subscribePresence([...history.convs.values()].filter((c) => c.kind === 'dm').map((c) => c.id));
  const incoming = (conv: string, m: ChatMessage, kind: 'dm' | 'group' = 'dm') => {
    if (!history.add(conv, m, kind)) return;
    const c = history.conv(conv, kind);
    // A group is marked read no further than the SDK processed it, and the SDK counts an entry processed once
    // its listeners returned: from inside this listener the mark would stop one entry short, so it waits a task.
    if (conv === open && !document.hidden) void (kind === 'group' ? setTimeout(readOpen, 0) : readOpen());
    else if (m.from !== me && !m.system) c.unread++;
    if (kind === 'dm' && presence.size < history.convs.size) follow();
    render();
  };

  client.on('message', (m) => incoming(m.from, { id: m.msg, msg: m.msg, from: m.from, text: m.text(), ts: m.ts }));
  client.on('recovered', (r) => {
    if (r.kind === 'message') incoming(r.message.from, { id: r.message.msg, msg: r.message.msg, from: r.message.from, text: r.message.text(), ts: r.message.ts });
    if (r.kind === 'sent') incoming(r.sent.to, { id: r.sent.msg, msg: r.sent.msg, from: me, text: r.sent.text(), ts: r.sent.ts, tick: 'sent' });
  });
  client.on('sent', (s) => incoming(s.to, { id: s.msg, msg: s.msg, from: me, text: s.text(), ts: s.ts, tick: 'sent' }));
  client.on('ack', (a) => {
    history.acked(a.id, a.msg, a.ts);
    render();
  });
  client.on('receipt', (r) => {
    history.receipt(r.by, r.msg, 'delivered');
    render();
  });
  client.on('read', (r) => {
    history.receipt(r.by, r.msg, 'read');
    render();
  });
  client.on('readState', (p) => {
    const c = history.convs.get(p.conv);
    if (!c) return;
    const upTo = msgNumber(p.msg);
    c.unread = c.msgs.filter((m) => m.from !== me && m.msg && msgNumber(m.msg) > upTo).length;
    render();
  });
  client.on('presence', (p) => {
    presence.set(p.user, { online: p.online, lastSeen: p.lastSeen });
    render();
  });
  client.on('typing', (t) => {
    // 1:1: the conversation is the typer (whichever way the server names it); a group: the group.
    const conv = t.conv === me ? t.from : t.conv;
    if (t.on) typing.set(conv, t.from);
    else typing.delete(conv);
    render();
  });
  client.on('groupMessage', (g) => {
    const c = history.conv(g.group, 'group');
    // An own send whose answer has not come yet: this delivery is it.
    const mine = g.from === me ? c.msgs.find((m) => m.from === me && m.seq === undefined && m.text === g.text()) : undefined;
    if (mine) {
      mine.seq = g.seq;
      mine.tick = 'sent';
      return render();
    }
    if (c.msgs.some((m) => m.seq === g.seq)) return;
    incoming(g.group, { id: `${g.group}#${g.seq}`, seq: g.seq, from: g.from, text: g.text(), ts: g.ts }, 'group');
    ticks.kick(g.group); // a member who writes has likely read what came before
  });
  client.on('groupEvent', (e) => {
    const known = history.convs.has(e.group);
    const c = history.conv(e.group, 'group', e.name || e.group);
    if (e.name) c.name = e.name;
    // Added to a group made earlier: the join carries no name; the roster has it.
    else if (!known)
      void client.roster(e.group).then(
        (r) => {
          c.name = r.name || c.name;
          render();
        },
        () => {},
      );
    if (e.kind === 'leave' && e.subject === me) c.left = true;
    if (e.kind === 'join' && e.subject === me) c.left = false;
    const what = { create: `${e.from} created the group`, join: `${e.subject} joined`, leave: `${e.subject} left`, role: `${e.subject}'s role changed`, update: `renamed to ${e.name}` }[e.kind];
    incoming(e.group, { id: `${e.group}#${e.seq}`, seq: e.seq, from: e.from, text: what ?? e.kind, ts: e.ts, system: true }, 'group');
  });
  client.on('groupAck', (a) => {
    for (const c of history.convs.values()) {
      const m = c.msgs.find((x) => x.id === a.id);
      if (m) {
        m.seq = a.seq;
        if (m.tick === 'pending') m.tick = 'sent';
        ticks.kick(a.group);
      }
    }
    render();
  });
  client.on('state', () => {
    if (client.state === 'open') {
      follow();
      resend(); // what was typed while the client was stopped (its send was refused as closed)
      ticks.kickAll();
    }
    renderBanner();
  });
  // The token was refused for good (production without a pasted token, a revoked one): back to the sign-in
  // form, with the reason; a fresh page, so no listener of this client is left behind.
  const signOut = (why: string) => {
    localStorage.removeItem('webchat.user');
    sessionStorage.setItem('webchat.why', why);
    location.assign('/');
  };
  client.on('error', (e) => {
    if (e.code === 'auth_failed') signOut(`Signed out: ${e.message}`);
  });
  addEventListener('online', () => void connect());
  addEventListener('offline', renderBanner);
  document.addEventListener('visibilitychange', () => {
    readOpen();
    render();
  });

  // The first connect rejects when the server cannot be reached (a page opened offline): try again when the
  // network returns and on a timer, until it is in. After that the SDK reconnects by itself.
  let connecting = false;
  let retryMs = 500;
  const connect = async (): Promise<void> => {
    if (connecting || client.state === 'open' || client.state === 'reconnecting') return;
    connecting = true;
    try {
      resend();
      await client.connect();
      follow();
    } catch (e) {
      if ((e as IrisError).code === 'auth_failed') return signOut(`Signed out: ${(e as Error).message}`);
      setTimeout(() => void connect(), (retryMs = Math.min(retryMs * 2, 5000)));
    } finally {
      connecting = false;
      renderBanner();
    }
  };

  /**
   * Hands a message of the history to the SDK (once per page: after that the SDK keeps it until acked, across
   * reconnects). A send refused because the client is stopped (a page that opened offline and has not connected
   * yet) stays pending in the history and is handed over again by the next resend().
   */
  const handed = new Set<string>();
  const hand = (c: Conversation, m: ChatMessage) => {
    handed.add(m.id);
    const p = c.kind === 'group' ? client.sendToGroup(c.id, m.text, { id: m.id }) : client.send(c.id, m.text, { id: m.id });
    p.then(render, (e: IrisError) => {
      if (e.code === 'closed') return void handed.delete(m.id);
      // Refused for good (bad recipient, not a member): shown as such, and not sent again after a reload.
      m.tick = 'failed';
      render();
      $('banner').hidden = false;
      $('banner').textContent = `Not sent: ${e.message}`;
    });
  };
  /** What the history still shows as unsent and this page has not handed over: again, with the same ids. */
  const resend = () => {
    for (const { conv, msg } of history.pending()) if (!handed.has(msg.id)) hand(conv, msg);
    queueMicrotask(renderBanner);
  };
  $('composer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('text');
    const text = input.value.trim();
    const c = open ? history.convs.get(open) : undefined;
    if (!text || !c) return;
    input.value = '';
    const m: ChatMessage = { id: crypto.randomUUID(), from: me, text, ts: Date.now(), tick: 'pending' };
    // In the history before the SDK stores the send (render() starts that write first): a reload shows it pending
    // and sends it again if the SDK's outbox does not have it.
    history.add(c.id, m, c.kind);
    render();
    hand(c, m);
    // Queued while offline: the banner counts it.
    queueMicrotask(renderBanner);
  });
  $('text').addEventListener('input', () => {
    if (open && !history.convs.get(open)?.left) client.typingInput(open);
  });
  $('new-chat').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const peer = $<HTMLInputElement>('peer-name').value.trim();
    if (!peer || peer === me) return;
    $<HTMLInputElement>('peer-name').value = '';
    history.conv(peer);
    follow();
    select(peer);
  });
  $('new-group').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const name = $<HTMLInputElement>('group-name').value.trim();
    const members = $<HTMLInputElement>('group-members').value.split(/[\s,]+/).filter((m) => m && m !== me);
    if (!name) return;
    void client.createGroup(name, members).then(
      (g) => {
        history.conv(g.group, 'group', name);
        $<HTMLInputElement>('group-name').value = $<HTMLInputElement>('group-members').value = '';
        select(g.group);
      },
      (e: IrisError) => ($('banner').textContent = `Group not created: ${e.message}`),
    );
  });
  $('add-member').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('member-name');
    const members = input.value.split(/[\s,]+/).filter((m) => m && m !== me);
    if (!open || !members.length) return;
    input.value = '';
    void client.addMembers(open, members).catch((e: IrisError) => {
      $('banner').hidden = false;
      $('banner').textContent = `Not added: ${e.message}`;
    });
  });
  $('leave-group').addEventListener('click', () => {
    if (open) void client.leaveGroup(open).catch((e: IrisError) => ($('banner').textContent = e.message));
  });
  $('logout').addEventListener('click', () => {
    localStorage.removeItem('webchat.user');
    void client.close().then(() => location.assign('/'));
  });
  render();
  void connect();
}

login(start);
