import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawClient, removeDir, startServer, tempDir, token, usersOn, type ServerProcess } from './helpers.js';

/**
 * wss:// with a certificate and key from files. A TLS session cannot move between processes, so the worker that
 * accepted the connection terminates TLS and relays the bytes to the owner over a unix socket (route "pipe").
 */
describe('TLS (wss)', () => {
  let server: ServerProcess;
  let dataDir: string;
  let port: number;
  let ca: string;
  const certDir = tempDir('iris-onprem-tls-');

  beforeAll(async () => {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-keyout', join(certDir, 'key.pem'), '-out', join(certDir, 'cert.pem'),
    ], { stdio: 'ignore' });
    ca = readFileSync(join(certDir, 'cert.pem'), 'utf8');
    ({ server, dataDir, port } = await startServer({
      workers: 2,
      args: ['--tls-cert', join(certDir, 'cert.pem'), '--tls-key', join(certDir, 'key.pem')],
    }));
  });

  afterAll(async () => {
    expect((await server.stop()).code).toBe(0);
    removeDir(dataDir);
    removeDir(certDir);
  });

  it('announces wss and answers health over https', async () => {
    expect(server.stdout).toMatch(/listening on wss:\/\/127\.0\.0\.1:\d+\/v1\/connect .*route pipe/);
    const status = await new Promise<number>((res, rej) => {
      request({ host: '127.0.0.1', port, path: '/healthz', ca }, (r) => {
        r.resume();
        res(r.statusCode ?? 0);
      }).on('error', rej).end();
    });
    expect(status).toBe(200);
  });

  it('carries messages between users of both workers', async () => {
    const url = `wss://127.0.0.1:${port}/v1/connect`;
    const [a] = usersOn(0, 2, 'tls-a-');
    const [b] = usersOn(1, 2, 'tls-b-');
    const ca0 = await RawClient.open(url, await token(a!), { ca });
    const cb = await RawClient.open(url, await token(b!), { ca });
    try {
      ca0.send({ t: 'hello', device: 'd', cursor: 0 });
      cb.send({ t: 'hello', device: 'd', cursor: 0 });
      await Promise.all([ca0.next('welcome'), cb.next('welcome')]);
      ca0.send({ t: 'send', id: 'x1', to: b!, body: new TextEncoder().encode('over tls') });
      await ca0.next('send_ack');
      const d = await cb.next('deliver');
      expect(new TextDecoder().decode(d.entries[0]!.body)).toBe('over tls');
      expect(d.entries[0]!.peer).toBe(a);
    } finally {
      ca0.close();
      cb.close();
    }
  });
});
