import type { ClientFrame } from '../protocol/index.js';

/**
 * A welcomed connection as the inbox, the outbox and presence queries see it: they write frames to it and tell
 * one connection from the next by `gen`, and nothing else (the socket, its timers and its handshake stay in
 * Connection).
 */
export interface Link {
  /** Differs for every socket the client opens: work written on an earlier one must be written again. */
  readonly gen: number;
  write(f: ClientFrame): void;
}

export interface LinkSource {
  /** The current socket once the server welcomed it; null while disconnected or handshaking. */
  current(): Link | null;
}
