import { createServer } from 'node:net';

/**
 * A TCP port that is free on `host` (default 127.0.0.1) right now (the kernel picks it). Used by tests and
 * benchmarks that start servers; the small race until the caller binds it is acceptable on a machine the
 * caller controls.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.unref();
    s.once('error', rej);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? res(a.port) : rej(new Error('no port assigned'))));
    });
  });
}
