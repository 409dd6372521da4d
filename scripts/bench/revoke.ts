/**
 * How long a revocation takes to close a live connection (issue 11: within 60 s), on a running server:
 *
 *   sh scripts/node.sh --import tsx scripts/bench/revoke.ts [--onprem | --wrangler] [--n 200] [--workers 2]
 *
 * Starts the server itself (the conformance suite's targets: on-prem from dist/, or wrangler dev), then N times:
 * connect a user with a fresh token, say hello, revoke the token through the admin API, and time the admin call's
 * answer and the socket's close (4005) from the moment the request was sent. Prints percentiles in ms.
 */
import { parseArgs } from 'node:util';
import { CLOSE_CODES, encodeJson } from '../../protocol/index.js';
import { ADMIN_SECRET, RawSocket, waitFor } from '../../test/conformance/helpers.js';
import { startOnprem } from '../../test/conformance/onprem-target.js';
import { startWrangler } from '../../test/conformance/wrangler-target.js';

const { values } = parseArgs({ options: { onprem: { type: 'boolean' }, wrangler: { type: 'boolean' }, n: { type: 'string', default: '200' }, workers: { type: 'string', default: '2' } } });
const n = Number(values.n);
const target = values.wrangler ? await startWrangler() : await startOnprem({ workers: Number(values.workers) });
const base = target.url.replace(/^ws/, 'http').replace(/\/v1\/connect$/, '');
const answered: number[] = [];
const closed: number[] = [];
try {
  for (let i = 0; i < n; i++) {
    const user = `rv-${Date.now().toString(36)}-${i}`;
    const token = await target.token(user);
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { jti: string; exp: number };
    const raw = await RawSocket.open(target.url, token);
    raw.send(encodeJson({ t: 'hello', device: 'd1', cursor: 0 }));
    await raw.next((f) => f.frame.t === 'welcome');
    const t0 = performance.now();
    let closedAt = 0;
    const watch = waitFor(() => raw.closed !== null && (closedAt ||= performance.now()) > 0, 60_000, 'the close');
    const res = await fetch(`${base}/admin/v1/users/${user}/revoke?jti=${claims.jti}&exp=${claims.exp}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_SECRET}` } });
    answered.push(performance.now() - t0);
    if (res.status !== 200) throw new Error(`revoke answered ${res.status}: ${await res.text()}`);
    await watch;
    if (raw.closed?.code !== CLOSE_CODES.token_revoked) throw new Error(`closed with ${raw.closed?.code}`);
    closed.push(closedAt - t0);
  }
} finally {
  await target.stop();
}
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!.toFixed(1);
const row = (name: string, xs: number[]) => `${name}: p50 ${pct(xs, 50)} ms, p99 ${pct(xs, 99)} ms, max ${pct(xs, 100)} ms`;
process.stdout.write(`${values.wrangler ? 'wrangler dev' : `on-prem (${values.workers} workers)`}, ${n} revocations\n${row('admin answer', answered)}\n${row('close (4005) seen by the client', closed)}\n`);
