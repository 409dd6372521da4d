import { describe, expect, it } from 'vitest';
import { fromWire, toWire, type GroupLinkMessage } from '../../onprem/group-link.js';

/** The on-prem link payload of group calls (onprem/group-link.ts): bytes survive, Buffers included. */
describe('group link payload', () => {
  it('round-trips calls and pushes with their bytes, whether Uint8Array or Buffer (which has toJSON)', () => {
    const body = Buffer.from([0, 1, 2, 255]).subarray(1);
    const msg: GroupLinkMessage = {
      k: 'push',
      push: {
        group: 'g',
        after: 3,
        upTo: 5,
        entries: [
          { seq: 4, kind: 'message', from: 'a', subject: '', name: '', ts: 7, body },
          { seq: 5, kind: 'update', from: 'a', subject: '', name: 'N', ts: 8, body: Uint8Array.of(9) },
        ],
        targets: [{ user: 'b', ranges: [[1, 0]] }],
      },
    };
    const back = fromWire<GroupLinkMessage>(toWire(msg));
    expect(back.k).toBe('push');
    if (back.k !== 'push') return;
    expect(back.push.entries.map((e) => [...e.body])).toEqual([[1, 2, 255], [9]]);
    expect(back.push.entries[0]!.body).toBeInstanceOf(Uint8Array);
    expect(back.push.targets).toEqual([{ user: 'b', ranges: [[1, 0]] }]);
    const call: GroupLinkMessage = { k: 'call', group: 'g', call: { op: 'change', from: 'a', cid: 'c', change: { kind: 'update', name: 'x', meta: new Uint8Array(0) } } };
    expect(fromWire(toWire(call))).toEqual(call);
  });
});
