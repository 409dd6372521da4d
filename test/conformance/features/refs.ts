import { expect, it } from 'vitest';
import { IrisError } from '../../../client/index.js';
import { waitFor } from '../helpers.js';
import type { ConformanceContext } from './index.js';

/**
 * Message references (PROTOCOL.md 9.9), black box through the SDK: a reply, an edit, a delete for everyone and a
 * reaction are messages that carry a `ref`, delivered with it; the server refuses what the sender may not do.
 */
export function refsFeature({ online }: ConformanceContext): void {
  it('references: A sends, B reacts and replies, A edits and deletes; B may not delete A’s message', async () => {
    const a = await online('ra');
    const b = await online('rb');
    const sent = await a.c.send(b.u, 'lunch at noon?');
    await waitFor(() => b.seen.messages.length === 1, 10_000, 'B to receive the message');
    const target = b.seen.messages[0]!.msg;
    expect(target).toBe(sent.msg);

    const react = await b.c.react(a.u, target, '👍');
    const reply = await b.c.reply(a.u, target, 'yes!');
    await waitFor(() => a.seen.messages.length === 2, 10_000, 'A to receive the reaction and the reply');
    expect(a.seen.messages.map((m) => [m.msg, m.ref, m.text()])).toEqual([
      [react.msg, { kind: 'react', msg: target }, '👍'],
      [reply.msg, { kind: 'reply', msg: target }, 'yes!'],
    ]);

    await a.c.edit(b.u, sent.msg, 'lunch at 1?');
    await a.c.deleteForEveryone(b.u, sent.msg);
    await waitFor(() => b.seen.messages.length === 3, 10_000, 'B to receive the edit and the delete');
    expect(b.seen.messages.slice(1).map((m) => [m.ref, m.text()])).toEqual([
      [{ kind: 'edit', msg: sent.msg }, 'lunch at 1?'],
      [{ kind: 'delete', msg: sent.msg }, ''],
    ]);

    // Only the sender deletes: B's attempt is refused with a typed error, and A receives nothing.
    const refused = await b.c.deleteForEveryone(a.u, sent.msg).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(IrisError);
    expect((refused as IrisError).code).toBe('ref_not_allowed');
    // A reference to no message of this conversation: bad_ref.
    const bad = await b.c.reply(a.u, `${a.u}:999999`, 'to what?').catch((e: unknown) => e);
    expect((bad as IrisError).code).toBe('bad_ref');
    // Something to wait for that proves nothing else arrived before it.
    await b.c.send(a.u, 'done');
    await waitFor(() => a.seen.messages.length === 3, 10_000, 'A to receive the last message');
    expect(a.seen.messages.map((m) => m.text())).toEqual(['👍', 'yes!', 'done']);
    expect(a.seen.errors).toEqual([]);
    expect(b.seen.errors).toEqual([]);
  });
}
