import type { Entry } from '../protocol/index.js';
import type { ConnState } from './ports.js';
import { entriesFor } from './refs.js';

/**
 * What one connection is shown of its user's inbox stream. A client written before an entry kind or a field
 * it could not decode did not name it in `hello.features` (PROTOCOL.md 7.1): it is not shown `sent` entries
 * (multi-device sync, core/history.ts) nor edits, deletes and reactions, and it gets a reply as the plain message
 * it also is (core/refs.ts entriesFor). Such a connection is *partial*: `vis` is the last seq it was actually
 * shown. It can only acknowledge what it was shown, so an ack of everything shown covers the entries skipped
 * after it (ackCovers), and Delivery acknowledges a skipped run itself when nothing shown is unacked; otherwise
 * its cursor, the trim and its send window would wait for an ack that cannot come.
 */
export function partial(st: ConnState): boolean {
  return st.sync !== true || st.refs !== true;
}

/** The entries of `entries` this connection is given, as it can decode them (seqs kept, some left out). */
export function shownOf(st: ConnState, entries: Entry[]): Entry[] {
  if (!partial(st)) return entries;
  return entriesFor(st.sync === true ? entries : entries.filter((e) => e.kind !== 'sent'), st.refs);
}

/** What an ack of `seq` on this connection acknowledges (see partial). */
export function ackCovers(st: ConnState, seq: number): number {
  return partial(st) && st.vis !== undefined && seq >= st.vis ? Math.max(seq, st.sent) : seq;
}
