/**
 * The "first process" of the resume test: connects with a FileStore, prints each message it processes
 * (`MSG <text>`), and after IRIS_STOP_AFTER messages hangs inside the next handler after printing STUCK.
 * It never acks on its own (ack batch and delay larger than what it processes), so the server's record of
 * this device lags behind the store: the parent kills it with SIGKILL and resumes with a new process.
 */
import { IrisClient } from '../../client/index.js';
import { FileStore } from '../../client/node-store.js';

const env = (k: string): string => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

const stopAfter = Number(env('IRIS_STOP_AFTER'));
let processed = 0;
const client = new IrisClient({
  url: env('IRIS_URL'),
  token: env('IRIS_TOKEN'),
  device: env('IRIS_DEVICE'),
  store: new FileStore(env('IRIS_STORE')),
  ack: { every: 128, delayMs: 3_600_000 },
});
client.on('message', async (m) => {
  if (processed === stopAfter) {
    process.stdout.write('STUCK\n');
    await new Promise(() => {});
  }
  processed++;
  process.stdout.write(`MSG ${m.text()}\n`);
});
client.on('error', (e) => {
  process.stderr.write(`error ${e.code}: ${e.message}\n`);
});
client.connect().catch((e: unknown) => {
  process.stderr.write(`connect failed: ${String(e)}\n`);
  process.exit(1);
});
