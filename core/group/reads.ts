import type { Conn } from '../ports.js';
import type { GroupMemberDeps } from './member.js';
import type { MemberGroups } from './store.js';

/**
 * A user's read position in its groups, shared by its devices (PROTOCOL.md 9.11, `group_read`): the member side's
 * counterpart of the 1:1 read positions. Whether the group's members learn how far the user read is the
 * read-receipt setting's business (GroupMember.noteMarks), not this: the user's own devices always do.
 */

/**
 * The user read `group` up to `seq`: one column written (user_groups.read, only when it moves forward) and
 * `group_read` to every connection of the user that reads groups, so the unread count is the same on each.
 */
export async function markRead(m: GroupMemberDeps, store: MemberGroups, group: string, seq: number): Promise<void> {
  const moved = await m.tx(() => store.setRead(group, seq));
  if (!moved) return;
  for (const c of m.deps.sockets.list()) {
    const st = c.state;
    if (st?.groups === true) m.out.reply(c, st.enc, { t: 'group_read', group, seq });
  }
}

/** After welcome: the read position of each of the user's groups that has one. */
export function sendReads(m: GroupMemberDeps, store: MemberGroups, conn: Conn): void {
  const st = conn.state;
  if (st?.groups !== true) return;
  for (const r of store.reads()) m.out.reply(conn, st.enc, { t: 'group_read', group: r.grp, seq: r.read });
}
