import { CLOSE_CODES, type ClientFrame, type ErrorFrame, type ServerFrame } from '../protocol/index.js';
import { IrisError, errText } from './errors.js';
import type { ReconnectPolicy } from './reconnect.js';

/**
 * Token refresh on a live connection (PROTOCOL.md 3.4), like Centrifugo's getToken: when the token is an
 * app-supplied callback, the SDK asks it for a new token at 80% of the current token's lifetime and sends a
 * `refresh` frame; the server answers `refreshed` (the connection now lives under the new token) or an error
 * (the connection keeps its old token; the app hears about it as an `error` event). A string token is never
 * refreshed: the server closes the connection at expiry (4006) and the reconnect is refused as expired.
 */

/** Share of a token's lifetime after which it is refreshed. */
const REFRESH_AT = 0.8;
/** Never sooner than this after the previous attempt, whatever the token says (a 1-second token must not spin). */
const MIN_DELAY_MS = 1_000;
/** After a failed attempt (callback threw, returned the same token, server unavailable): try again after this. */
const RETRY_MS = 10_000;

/** The error codes that answer a `refresh` frame (PROTOCOL.md 3.4). */
export const REFRESH_ERRORS: ReadonlySet<string> = new Set(['token_invalid', 'token_revoked', 'token_mismatch']);

const TOKEN_CLOSES: Readonly<Record<number, string>> = {
  [CLOSE_CODES.token_revoked]: 'its token was revoked',
  [CLOSE_CODES.token_expired]: 'its token expired',
  [CLOSE_CODES.disconnected_by_admin]: 'an operator disconnected it',
};

/**
 * A close for the token's sake (4005 revoked, 4006 expired) or an operator's (4007): the app is told why (an
 * `error` event, code `closed`: the reconnect that follows is silent otherwise). After 4005 the revoked token is
 * never offered again: a callback is asked for a new one; a string token cannot be replaced, which is the final
 * error returned here (auth_failed, reason token_revoked).
 */
export function closedForToken(code: number, reason: string, token: string, refreshable: boolean, policy: ReconnectPolicy, report: (e: IrisError) => void): IrisError | null {
  const why = TOKEN_CLOSES[code];
  if (why === undefined) return null;
  const final = code === CLOSE_CODES.token_revoked ? policy.revoked(token, refreshable) : null;
  if (final) return final;
  const next = code === CLOSE_CODES.disconnected_by_admin ? 'reconnecting' : refreshable ? 'reconnecting with a new token' : 'reconnecting';
  report(new IrisError('closed', `the server closed the connection: ${why} (${code}${reason ? ` ${reason}` : ''}); ${next}`, { closeCode: code }));
  return null;
}

/** A JWT's iat and exp (seconds), read without verifying: only used to decide when to refresh. */
export function jwtTimes(token: string): { iat?: number; exp?: number } {
  const part = token.split('.')[1];
  if (part === undefined) return {};
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))) as { iat?: unknown; exp?: unknown };
    const out: { iat?: number; exp?: number } = {};
    if (typeof json.iat === 'number') out.iat = json.iat;
    if (typeof json.exp === 'number') out.exp = json.exp;
    return out;
  } catch {
    return {};
  }
}

/** When (ms from now) a token should be refreshed, or null when it has no exp. */
export function refreshDelay(token: string, nowMs: number): number | null {
  const { iat, exp } = jwtTimes(token);
  if (exp === undefined) return null;
  const start = iat !== undefined && iat * 1000 <= nowMs ? iat * 1000 : nowMs;
  const at = start + REFRESH_AT * (exp * 1000 - start);
  return Math.max(MIN_DELAY_MS, at - nowMs);
}

export interface RefresherPort {
  /** The app's token callback. */
  getToken: () => string | Promise<string>;
  /** Writes a frame on the live socket (a no-op when it is gone). */
  write(f: ClientFrame): void;
  /** The connection now lives under this token (reconnects and refusal probes use it). */
  adopted(token: string): void;
  error(e: IrisError): void;
}

/** One live socket's refresh schedule: started at the welcome, stopped when the socket goes down. */
export class TokenRefresher {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pending: string | null = null;
  private stopped = false;

  constructor(
    private current: string,
    private readonly port: RefresherPort,
  ) {
    this.schedule(refreshDelay(current, Date.now()));
  }

  /** The refresh of a socket just welcomed with `token`: only when the app gave a callback (a string never changes). */
  static start(token: string, source: string | (() => string | Promise<string>), port: Omit<RefresherPort, 'getToken'>): TokenRefresher | null {
    return typeof source === 'function' ? new TokenRefresher(token, { ...port, getToken: source }) : null;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** A frame from the server: true when it was the answer to our refresh (and is consumed here). */
  onFrame(f: ServerFrame): boolean {
    if (f.t === 'refreshed') {
      if (this.pending !== null) {
        this.current = this.pending;
        this.pending = null;
        this.port.adopted(this.current);
      }
      this.schedule(refreshDelay(this.current, Date.now()));
      return true;
    }
    if (f.t === 'error' && this.pending !== null && f.ref === undefined && f.code === 'unknown_type') {
      // A server older than `refresh`: the connection lives until its token's expiry, then reconnects.
      this.pending = null;
      this.stop();
      return true;
    }
    if (f.t === 'error' && this.pending !== null && f.ref === undefined && (REFRESH_ERRORS.has(f.code) || f.code === 'unavailable')) {
      this.failed(f);
      return true;
    }
    return false;
  }

  private failed(f: ErrorFrame): void {
    this.pending = null;
    if (f.code === 'unavailable') return this.schedule(Math.max(RETRY_MS, f.retryAfter ?? 0));
    // The connection keeps its old token; the app learns why. The expiry close (4006) and the reconnect that
    // follows ask the callback again.
    this.port.error(new IrisError('auth_failed', `token refresh refused (${f.code}): ${f.message}`, { reason: f.code }));
    this.schedule(RETRY_MS);
  }

  private schedule(delay: number | null): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (delay === null || this.stopped) return;
    this.timer = setTimeout(() => void this.fire(), delay);
    // Never keeps a Node process alive on its own.
    (this.timer as { unref?: () => void }).unref?.();
  }

  private async fire(): Promise<void> {
    this.timer = null;
    let token: string;
    try {
      token = await this.port.getToken();
    } catch (e) {
      if (!this.stopped) this.port.error(new IrisError('auth_failed', `the token callback failed: ${errText(e)}`));
      return this.schedule(RETRY_MS);
    }
    if (this.stopped) return;
    // The callback still hands out the current token (it caches until closer to expiry): ask again later.
    if (token === this.current) return this.schedule(RETRY_MS);
    this.pending = token;
    this.port.write({ t: 'refresh', token });
  }
}
