/**
 * The slice of the standard WebSocket API the client uses, so the browser's, Node's (>= 22, global, undici),
 * the Workers runtime's and test fakes all fit. Nothing platform-specific is imported here.
 */

/** What the client reads from open/message/close/error events. */
export interface SocketEvent {
  /** message: string (text frame), ArrayBuffer / ArrayBufferView (binary), or a Blob where binaryType is ignored. */
  data?: unknown;
  /** close */
  code?: number;
  reason?: string;
  /** error (non-standard, but `ws` and some runtimes carry the cause here) */
  message?: string;
  error?: unknown;
}

export interface WebSocketLike {
  readonly readyState: number;
  /** Subprotocol the server selected. */
  readonly protocol: string;
  binaryType: string;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: SocketEvent) => void): void;
}

/**
 * Second constructor argument: the standard subprotocol list, or (tokenTransport 'header' only) Node's undici
 * extension `{ protocols, headers }`.
 */
export type SocketInit = string[] | { protocols: string[]; headers: Record<string, string> };

export type WebSocketConstructor = new (url: string, init: SocketInit) => WebSocketLike;

/** The platform's WebSocket, or an error telling the app to inject one. */
export function defaultWebSocket(): WebSocketConstructor {
  const g = (globalThis as { WebSocket?: unknown }).WebSocket;
  if (typeof g !== 'function') {
    throw new Error('no global WebSocket in this runtime: pass the WebSocket option (Node >= 22, browsers and Workers have one)');
  }
  return g as WebSocketConstructor;
}

/** Reads the bytes of a binary message, whatever the runtime handed over. */
export function binaryOf(data: unknown): Uint8Array | Promise<Uint8Array> | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data === 'object' && data !== null && 'arrayBuffer' in data && typeof data.arrayBuffer === 'function') {
    // A Blob: some runtimes ignore binaryType = 'arraybuffer'.
    return (data.arrayBuffer as () => Promise<ArrayBuffer>)().then((b) => new Uint8Array(b));
  }
  return null;
}

/** Best-effort text of an error event (the standard one carries none; `ws` says "Unexpected server response: 401"). */
export function describeErrorEvent(ev: SocketEvent): string {
  const parts: string[] = [];
  if (typeof ev.message === 'string' && ev.message) parts.push(ev.message);
  if (ev.error instanceof Error) {
    parts.push(ev.error.message);
    const cause = (ev.error as { cause?: unknown }).cause;
    if (cause instanceof Error) parts.push(cause.message);
  }
  return parts.join(': ');
}

/** HTTP status of a refused handshake, when the error text names one. */
export function statusFromErrorText(text: string): number | undefined {
  const m = /(?:server response|status(?: code)?)[:\s]+(\d{3})\b/i.exec(text);
  return m ? Number(m[1]) : undefined;
}

/** True when `token` is a JWT whose exp lies in the past (read without verifying; only used to explain a refusal). */
export function jwtExpired(token: string, nowMs: number): boolean {
  const part = token.split('.')[1];
  if (part === undefined) return false;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))) as { exp?: unknown };
    return typeof json.exp === 'number' && json.exp * 1000 < nowMs;
  } catch {
    return false;
  }
}

/** The slice of the Fetch API the client uses to learn why a handshake was refused (global fetch fits). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; signal?: AbortSignal },
) => Promise<{ status: number; headers: { get(name: string): string | null }; json(): Promise<unknown> }>;

/** What a plain GET of the connect URL said about a refused handshake. */
export interface ProbeResult {
  status: number;
  /** The `error` field of the server's JSON body (token_expired, invalid_signature, too_many_connects, ...). */
  code?: string;
  message?: string;
  /** Retry-After, in ms. */
  retryAfter?: number;
}
