import type { Presence } from '../protocol/index.js';
import { IrisError } from './errors.js';
import type { LinkSource } from './link.js';
import type { PresenceInfo } from './types.js';

interface Query {
  ref: string;
  users: string[];
  resolve: (v: PresenceInfo[]) => void;
  reject: (e: IrisError) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Generation of the socket it was last written to (0: none): a new connection gets it again. */
  gen: number;
}

/** Presence queries waiting for their answer; each is (re)written to every new connection until answered. */
export class PresenceQueries {
  private readonly queries = new Map<string, Query>();

  constructor(
    private readonly link: LinkSource,
    private readonly timeoutMs: number,
  ) {}

  /** Asks for `users` under `ref`; rejects with `timeout` when no answer comes within the timeout. */
  ask(ref: string, users: string[]): Promise<PresenceInfo[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.queries.delete(ref);
        reject(new IrisError('timeout', 'no presence answer in time', { ref }));
      }, this.timeoutMs);
      const q: Query = { ref, users: [...users], resolve, reject, timer, gen: 0 };
      this.queries.set(ref, q);
      this.write(q);
    });
  }

  answered(f: Presence): void {
    const q = this.take(f.ref);
    q?.resolve(f.users);
  }

  /** An error frame about `ref`: true when it was one of these queries (now rejected with `err`). */
  refused(ref: string, err: IrisError): boolean {
    const q = this.take(ref);
    q?.reject(err);
    return q !== null;
  }

  /** A new connection: queries not yet written to it go out again. */
  rewrite(): void {
    for (const q of this.queries.values()) this.write(q);
  }

  rejectAll(err: IrisError): void {
    for (const q of this.queries.values()) {
      clearTimeout(q.timer);
      q.reject(err.withRef(q.ref));
    }
    this.queries.clear();
  }

  private take(ref: string): Query | null {
    const q = this.queries.get(ref);
    if (!q) return null;
    this.queries.delete(ref);
    clearTimeout(q.timer);
    return q;
  }

  private write(q: Query): void {
    const s = this.link.current();
    if (s === null || q.gen === s.gen) return;
    q.gen = s.gen;
    s.write({ t: 'presence_query', ref: q.ref, users: q.users });
  }
}
