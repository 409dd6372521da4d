import { IrisError, type IrisClient } from '../../client/index.js';

/**
 * The chat CLI's group commands (scripts/chat.ts), over the SDK's group methods (client/groups.ts):
 *
 *   /group create GROUP [user...]   create GROUP (its id and name) with these members; you are its admin
 *   /group add GROUP user...        /group remove GROUP user       /group leave GROUP
 *   /group admin GROUP user on|off  /group rename GROUP NAME...    /group roster GROUP
 *   /group read GROUP               mark what was shown of GROUP read
 *   /group info GROUP SEQ           who received and read your message #SEQ
 *   /g GROUP text...                send to a group
 */
export const GROUP_HELP = '/group create|add|remove|leave|admin|rename|roster|read|info GROUP ...  /g GROUP text';

type Out = (line: string) => void;

const why = (e: unknown) => (e instanceof IrisError ? `${e.code}: ${e.message}` : String(e));

/** The chat's short indexes (#N) of messages shown (scripts/chat.ts), shared by 1:1 and group messages. */
export interface ShownIndex {
  remember(msg: string, from: string, text: string): number;
  /** How a referred-to message is named: its #N and a quote, or its key if never shown here. */
  target(msg: string): string;
  setText(msg: string, from: string, text: string): void;
}

/** A group message's key in the index: `GROUP#SEQ` (1:1 server ids are `user:n`, so the two never meet). */
export const groupKey = (group: string, seq: number | string): string => `${group}#${seq}`;

/** Sends a reply, edit, delete or reaction to group message `key` (/reply N ... on a group message); false: not one. */
export function groupRef(client: IrisClient, key: string, kind: 'reply' | 'edit' | 'delete' | 'react', text: string, out: Out): boolean {
  const k = /^(.+)#(\d+)$/.exec(key);
  if (!k) return false;
  const [group, seq] = [k[1]!, Number(k[2])];
  client.sendToGroup(group, text, { ref: { kind, seq } }).then(
    (a) => out(`  ✓ ${kind} of ${group} #${seq} (#${a.seq}${a.dup ? ', already stored' : ''})`),
    (e: unknown) => out(`! not sent to ${group}: ${why(e)}`),
  );
  return true;
}

/** Prints group messages and membership changes as they arrive (once per device: the SDK keeps the cursors). */
export function showGroups(client: IrisClient, out: Out, clock: (ms: number) => string, idx?: ShownIndex): void {
  client.on('groupMessage', (m) => {
    const at = `[${clock(m.ts)}] ${m.group} |`;
    const key = groupKey(m.group, m.seq);
    if (!idx) return out(`${at} ${m.from}: ${m.text()}`);
    if (!m.ref) return out(`${at} #${idx.remember(key, m.from, m.text())} ${m.from}: ${m.text()}`);
    const t = idx.target(groupKey(m.group, m.ref.msg));
    switch (m.ref.kind) {
      case 'reply':
        return out(`${at} #${idx.remember(key, m.from, m.text())} ${m.from} ↪ ${t}: ${m.text()}`);
      case 'edit':
        out(`${at} ${m.from} edited ${t}: ${m.text()}`);
        return idx.setText(groupKey(m.group, m.ref.msg), m.from, m.text());
      case 'delete':
        return out(`${at} ${m.from} deleted ${t} for everyone`);
      case 'react':
        return out(m.body.length === 0 ? `${at} ${m.from} removed their reaction to ${t}` : `${at} ${m.from} reacted ${m.text()} to ${t}`);
    }
  });
  client.on('groupEvent', (e) => {
    const what =
      e.kind === 'create' ? `${e.from} created the group "${e.name}"`
      : e.kind === 'join' ? `${e.from} added ${e.subject}`
      : e.kind === 'leave' ? (e.from === e.subject ? `${e.subject} left` : `${e.from} removed ${e.subject}`)
      : e.kind === 'role' ? `${e.from} ${e.body[0] === 1 ? 'made' : 'removed'} ${e.subject} ${e.body[0] === 1 ? 'an admin' : 'as admin'}`
      : `${e.from} renamed the group "${e.name}"`;
    out(`* ${e.group} | ${what}`);
  });
}

/** Handles a /group or /g line; false when the line is not one. */
export async function groupCommand(client: IrisClient, line: string, out: Out): Promise<boolean> {
  const words = line.split(/\s+/);
  if (words[0] === '/g') {
    const group = words[1];
    const text = line.replace(/^\/g\s+\S+\s?/, '');
    if (group === undefined || text === '') return out('! usage: /g GROUP text'), true;
    client.sendToGroup(group, text).then(
      (a) => out(`  ✓ "${text.slice(0, 40)}" -> ${group} (#${a.seq}${a.dup ? ', already stored' : ''})`),
      (e: unknown) => out(`! not sent to ${group}: ${why(e)}`),
    );
    return true;
  }
  if (words[0] !== '/group') return false;
  const [, cmd, group, ...rest] = words;
  if (cmd === undefined || group === undefined) return out(`! usage: ${GROUP_HELP}`), true;
  try {
    switch (cmd) {
      case 'create':
        out(`* created ${group} (#${(await client.createGroup(group, rest, { group })).seq})`);
        return true;
      case 'add':
        await client.addMembers(group, rest);
        return true;
      case 'remove':
        for (const u of rest) await client.removeMember(group, u);
        return true;
      case 'leave':
        await client.leaveGroup(group);
        return true;
      case 'admin':
        await client.setRole(group, rest[0] ?? '', rest[1] !== 'off');
        return true;
      case 'rename':
        await client.updateGroup(group, rest.join(' '));
        return true;
      case 'roster': {
        const r = await client.roster(group);
        out(`* ${group} "${r.name}" (#${r.seq}): ${r.members.map((m) => `${m.user}${m.admin ? ' (admin)' : ''}`).join(', ')}`);
        return true;
      }
      case 'read':
        client.markGroupRead(group, client.groupCursor(group));
        return true;
      case 'info': {
        const r = await client.groupReceipts(group, Number(rest[0]));
        const by = (state: string) => r.members.filter((m) => m.state === state).map((m) => m.user).join(', ') || '-';
        out(`* ${group} #${r.seq}: read by ${by('read')}; delivered to ${by('delivered')}; not yet ${by('sent')}`);
        return true;
      }
      default:
        out(`! unknown group command ${cmd}; ${GROUP_HELP}`);
        return true;
    }
  } catch (e) {
    out(`! /group ${cmd} ${group}: ${why(e)}`);
    return true;
  }
}
