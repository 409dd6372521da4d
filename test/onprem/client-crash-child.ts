/**
 * A receiving app for the client crash test. Connects with a FileStore and writes every entry it is given to
 * stdout synchronously (so a line printed is a line the parent sees, whatever kills the process next):
 *   MSG <text>   a 'message' event
 *   REC <text>   a 'recovered' event (handed out by an earlier process whose handler never finished)
 * IRIS_CRASH picks where it dies (a SIGKILL of itself, as hard as a power cut is for the process):
 *   handler:N   right after its N-th message handler logged, before the store records it as handled
 *   handout:N   in the middle of its N-th handOut write: a torn temp file is written, the rename never happens
 *   none        never (the parent may kill it at any time, or write "quit" to stdin for a clean close)
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { IrisClient } from '../../client/index.js';
import { FileStore } from '../../client/node-store.js';
import type { StoredEntry } from '../../client/store.js';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

const [mode, nth] = env('IRIS_CRASH').split(':') as [string, string | undefined];
const at = Number(nth ?? 0);
const die = (): never => {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
};

class CrashingStore extends FileStore {
  private handOuts = 0;
  override handOut(entries: StoredEntry[], cursor: number): void {
    if (mode === 'handout' && ++this.handOuts === at) {
      const fd = openSync(`${this.path}.${process.pid}.tmp`, 'w');
      writeSync(fd, '{"version":1,"cursor":');
      closeSync(fd);
      die();
    }
    super.handOut(entries, cursor);
  }
}

let handled = 0;
const client = new IrisClient({
  url: env('IRIS_URL'),
  token: env('IRIS_TOKEN'),
  device: 'crashy',
  store: new CrashingStore(env('IRIS_STORE')),
  ack: { every: 4, delayMs: 5 },
  reconnect: { baseMs: 50, maxMs: 500 },
});
client.on('message', (m) => {
  writeSync(1, `MSG ${m.text()}\n`);
  if (mode === 'handler' && ++handled === at) die();
});
client.on('recovered', (r) => {
  if (r.kind === 'message') writeSync(1, `REC ${r.message.text()}\n`);
});
client.on('error', (e) => void process.stderr.write(`error ${e.code}: ${e.message}\n`));
client.connect().then(
  () => writeSync(1, 'OPEN\n'),
  (e: unknown) => {
    process.stderr.write(`connect failed: ${String(e)}\n`);
    process.exit(1);
  },
);
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'quit') void client.close().then(() => process.exit(0));
});
