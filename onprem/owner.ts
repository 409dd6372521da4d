/**
 * Which worker owns a user. The one place this is decided: the listener (to hand a connection to its owner),
 * the router (to reach another user's shard), recovery and the tests all call ownerOf.
 *
 * FNV-1a (32 bit) over the UTF-8 bytes of the user id, modulo the worker count. Stable across processes,
 * restarts, Node versions and machines; user ids are ASCII ([A-Za-z0-9._@+=-]) so it is cheap. The worker count
 * of a data directory is fixed when it is created (see config.ts: data-dir metadata), because a user's state
 * lives in its owner's SQLite file.
 */
export function userHash(user: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < user.length; i++) {
    let c = user.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, 0x01000193);
      continue;
    }
    // Non-ASCII (never a valid user id, but keep the function total): hash the UTF-8 bytes.
    const bytes = new TextEncoder().encode(user.slice(i, i + (c >= 0xd800 && c <= 0xdbff ? 2 : 1)));
    if (c >= 0xd800 && c <= 0xdbff) i++;
    for (c of bytes) h = Math.imul(h ^ c, 0x01000193);
  }
  return h >>> 0;
}

export function ownerOf(user: string, workers: number): number {
  return userHash(user) % workers;
}
