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

/** Prints group messages and membership changes as they arrive (once per device: the SDK keeps the cursors). */
export function showGroups(client: IrisClient, out: Out, clock: (ms: number) => string): void {
  client.on('groupMessage', (m) => out(`[${clock(m.ts)}] ${m.group} | ${m.from}: ${m.text()}`));
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
