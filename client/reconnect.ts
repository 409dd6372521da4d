import type { ErrorFrame } from '../protocol/index.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { IrisError } from './errors.js';
import { authError } from './handshake.js';
import { jwtExpired, statusFromErrorText, type ProbeResult } from './socket.js';

/** Consecutive 401 refusals (each with a fresh token from the token callback) before giving up. */
const MAX_AUTH_REFUSALS = 3;

/** What is known about a socket that failed or was lost. */
export interface Failure {
  welcomed: boolean;
  /** Some socket was welcomed since connect(): a failure now is a drop to repair, not a refused connect(). */
  everOpened: boolean;
  /** The token this socket carried. */
  token: string;
  /** Close code and reason (1006 and the cause for a socket the client abandoned). */
  code: number;
  reason: string;
  /** What the runtime's error event said. */
  errorText: string;
  /** An error frame that answered the hello. */
  refusal: ErrorFrame | null;
  /** What a plain GET of the connect URL said (null: not asked, or not learnt). */
  probe: ProbeResult | null;
  /** No welcome came in time. */
  timedOut: boolean;
}

export type Verdict = { giveUp: IrisError } | { retryInMs: number };

/**
 * Whether and when to try again after a failure: jittered backoff, at least the server's Retry-After, a new
 * token after a 401 (when there is a callback that gives one), and a final error for what retrying cannot fix.
 */
export class ReconnectPolicy {
  private attempt = 0;
  /** Consecutive 401 refusals, the token refused last, and what the server said about it. */
  private authRefusals = 0;
  private refusedToken: string | null = null;
  private lastAuthRefusal: ProbeResult = { status: 401 };

  constructor(
    private readonly o: {
      url: string;
      /** The token comes from a callback that may give a new one after a 401. */
      refreshable: boolean;
      backoff?: BackoffOptions | undefined;
    },
  ) {}

  /** connect() was called, or a socket was welcomed: start counting again. */
  reset(): void {
    this.attempt = 0;
    this.authRefusals = 0;
    this.refusedToken = null;
  }

  /** The final error when the token callback handed back the token the server just refused, else null. */
  checkToken(token: string): IrisError | null {
    if (this.refusedToken === null || token !== this.refusedToken) return null;
    return authError(this.lastAuthRefusal, 'the token callback returned the token the server refused');
  }

  /**
   * The server closed the connection because its token was revoked (4005). The token is never offered again: with
   * a callback the next attempt asks for a new one (the same one back ends it); without, this is the final error.
   */
  revoked(token: string, refreshable: boolean): IrisError | null {
    this.refusedToken = token;
    this.lastAuthRefusal = { status: 401, code: 'token_revoked', message: 'the token was revoked' };
    return refreshable ? null : authError(this.lastAuthRefusal, 'the connection was closed because its token was revoked');
  }

  judge(f: Failure): Verdict {
    let retryAfterMs = 0;
    if (!f.welcomed) {
      const { probe } = f;
      const status = probe?.status ?? statusFromErrorText(f.errorText) ?? (jwtExpired(f.token, Date.now()) ? 401 : undefined);
      const refusal: ProbeResult = probe ?? { status: status ?? 0 };
      if (status === 401) {
        this.authRefusals++;
        this.refusedToken = f.token;
        this.lastAuthRefusal = refusal;
        // With a token callback, a 401 means "ask for a new token": the next attempt calls it again.
        if (!this.o.refreshable) return { giveUp: authError(refusal, 'the token was refused and there is no token callback to get another') };
        if (this.authRefusals >= MAX_AUTH_REFUSALS) return { giveUp: authError(refusal, `${this.authRefusals} tokens in a row were refused`) };
      } else if (status === 403) {
        return { giveUp: authError(refusal, 'the token may not connect here') };
      }
      // Retry-After of a 429 (too many connects) or 503 (shard restarting, server full): wait at least that long.
      retryAfterMs = probe?.retryAfter ?? 0;
      if (!f.everOpened && status !== 401) {
        const detail = probe?.message ?? f.refusal?.message ?? (f.errorText || f.reason || `close code ${f.code}`);
        const details = {
          closeCode: f.code,
          ...(status && status !== 426 ? { status } : {}),
          ...(probe?.code !== undefined ? { reason: probe.code } : {}),
          ...(probe?.retryAfter !== undefined ? { retryAfter: probe.retryAfter } : {}),
        };
        return {
          giveUp: f.timedOut
            ? new IrisError('timeout', 'no welcome from the server in time', { closeCode: f.code })
            : new IrisError('connection_refused', `could not connect to ${this.o.url}: ${detail}`, details),
        };
      }
    }
    return { retryInMs: Math.max(backoffDelay(this.attempt++, this.o.backoff), retryAfterMs) };
  }
}
