import { SELF } from 'cloudflare:test';
import { SignJWT, importJWK, type JWK } from 'jose';
import { decodeFrame, encodeBinary, type ClientFrame, type Entry, type ServerFrame } from '../../protocol/index.js';
import type { Env } from '../../durable-objects/env.js';
import keys from '../fixtures/test-keys.json';

/** Test-side helpers that run inside workerd next to the Worker under test. */

export const ISSUER = 'https://issuer.test';
export const AUDIENCE = 'iris-test';
const SECRET = new TextEncoder().encode('test-secret');

export interface TokenOptions {
  sub?: string | undefined;
  alg?: 'HS256' | 'RS256' | 'ES256' | 'EdDSA' | 'stray';
  iss?: string;
  aud?: string;
  /** Seconds relative to now. */
  exp?: number;
  nbf?: number;
  /** Extra claims (e.g. padding to make a token of a given size). */
  claims?: Record<string, unknown>;
}

export async function token(user: string | undefined, o: TokenOptions = {}): Promise<string> {
  const alg = o.alg ?? 'HS256';
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT(o.claims ?? {}).setIssuer(o.iss ?? ISSUER).setAudience(o.aud ?? AUDIENCE).setIssuedAt(now).setExpirationTime(now + (o.exp ?? 3600));
  if (user !== undefined) jwt = jwt.setSubject(user);
  if (o.nbf !== undefined) jwt = jwt.setNotBefore(now + o.nbf);
  if (alg === 'HS256') return jwt.setProtectedHeader({ alg }).sign(SECRET);
  const jwk = (keys.private as Record<string, JWK>)[alg]!;
  const key = await importJWK(jwk, jwk.alg);
  return jwt.setProtectedHeader({ alg: jwk.alg!, kid: jwk.kid! }).sign(key);
}

/** An unsigned token (`alg: none`), which must never be accepted. */
export function unsignedToken(user: string): string {
  const b64 = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: user, iss: ISSUER, aud: AUDIENCE, exp: now + 3600 })}.`;
}

export function upgradeRequest(headers: Record<string, string> = {}, query = '', method = 'GET'): Promise<Response> {
  return SELF.fetch(`http://iris.test/v1/connect${query}`, {
    method,
    headers: { Upgrade: 'websocket', 'Sec-WebSocket-Protocol': 'iris.v1', ...headers },
  });
}

/** A raw protocol client over the WebSocket the Worker returns. Collects every frame it receives. */
export class TestClient {
  readonly frames: ServerFrame[] = [];
  closed: { code: number; reason: string } | null = null;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    // Like browsers, a client-side WebSocket in workerd hands binary messages over as Blob unless told otherwise.
    ws.binaryType = 'arraybuffer';
    ws.addEventListener('message', (ev) => {
      this.frames.push(decodeFrame(ev.data as string | ArrayBuffer) as ServerFrame);
      this.wake();
    });
    ws.addEventListener('close', (ev) => {
      this.closed = { code: ev.code, reason: ev.reason };
      this.wake();
    });
  }

  static async open(user: string, ip = '10.0.0.1'): Promise<TestClient> {
    const res = await upgradeRequest({ Authorization: `Bearer ${await token(user)}`, 'CF-Connecting-IP': ip });
    if (res.status !== 101 || !res.webSocket) throw new Error(`upgrade refused: ${res.status} ${await res.text()}`);
    res.webSocket.accept();
    return new TestClient(res.webSocket);
  }

  /** features: HELLO_FEATURES bits (the hello then carries receipts 0 and reads 0 before them). */
  static async connect(user: string, device: string, cursor = 0, features?: number): Promise<TestClient> {
    const c = await TestClient.open(user);
    c.send(features === undefined ? { t: 'hello', device, cursor } : { t: 'hello', device, cursor, receipts: 0, reads: 0, features });
    await c.waitFor(() => c.of('welcome').length > 0);
    return c;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(f: ClientFrame): void {
    this.ws.send(encodeBinary(f));
  }
  post(to: string, text: string, id: string): void {
    this.send({ t: 'send', id, to, body: new TextEncoder().encode(text) });
  }

  /** Waits until cond() holds; fails after timeoutMs with a description of what arrived. */
  async waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; frames so far: ${JSON.stringify(this.frames.map((f) => f.t))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  of<T extends ServerFrame['t']>(t: T): Extract<ServerFrame, { t: T }>[] {
    return this.frames.filter((f): f is Extract<ServerFrame, { t: T }> => f.t === t);
  }
  entries(): Entry[] {
    return this.of('deliver').flatMap((d) => d.entries);
  }
  texts(): string[] {
    return this.entries()
      .filter((e) => e.kind === 'message')
      .map((e) => new TextDecoder().decode(e.body));
  }
  /** Acks everything received so far and waits until `n` messages have arrived. */
  async receive(n: number, timeoutMs = 10_000): Promise<string[]> {
    let acked = 0;
    await this.waitFor(() => {
      const last = this.entries().at(-1)?.seq ?? 0;
      if (last > acked) {
        this.send({ t: 'deliver_ack', seq: last });
        acked = last;
      }
      return this.texts().length >= n;
    }, timeoutMs);
    return this.texts();
  }
  async acks(n: number): Promise<void> {
    await this.waitFor(() => this.of('send_ack').length + this.of('error').length >= n);
  }
  close(): void {
    try {
      this.ws.close(1000, 'bye');
    } catch {
      // already closed
    }
  }
}

export function userShard(env: Cloudflare.Env, user: string) {
  return env.USERS.get(env.USERS.idFromName(user));
}

/**
 * An Env for calling the edge Worker's fetch directly with only `vars` (nothing inherited from the project's
 * test bindings), whose USERS namespace records each user an upgrade was handed to instead of reaching a shard.
 */
export function edgeEnv(vars: Record<string, unknown>, handedOff: string[]): Env {
  const users = {
    idFromName: (name: string) => name,
    get: (id: string) => ({
      fetch: async () => {
        handedOff.push(id);
        return new Response('handed off', { status: 200 });
      },
    }),
  };
  return { USERS: users, ...vars } as unknown as Env;
}
