/**
 * Iris wire protocol v1: frame types, the two encodings, limits and error codes. Pure TypeScript with no
 * platform import, shared by the edge Worker, the Durable Object, the on-prem server and the client SDK.
 */
import { decodeBinary, encodeBinary } from './binary.js';
import { ProtocolError } from './errors.js';
import type { Frame } from './frames.js';
import { decodeJson, encodeJson } from './json.js';

export * from './errors.js';
export * from './frames.js';
export * from './groups.js';
export * from './limits.js';
export { decodeBinary, encodeBinary } from './binary.js';
export { decodeJson, encodeJson, fromBase64, toBase64 } from './json.js';

/** How one side of a connection speaks: each side answers in the encoding of the frames it receives. */
export type Encoding = 'binary' | 'json';

/** Decode one WebSocket message: text is JSON, anything else is binary. Throws ProtocolError. */
export function decodeFrame(data: string | ArrayBuffer | ArrayBufferView): Frame {
  if (typeof data === 'string') return decodeJson(data);
  if (data instanceof Uint8Array) return decodeBinary(data);
  if (ArrayBuffer.isView(data)) return decodeBinary(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  // Tag check rather than instanceof: buffers may come from another realm (test runners, worker threads).
  if (Object.prototype.toString.call(data) === '[object ArrayBuffer]') return decodeBinary(new Uint8Array(data as ArrayBuffer));
  throw new ProtocolError('bad_frame', 'unsupported message type');
}

export function encodeFrame(f: Frame, encoding: Encoding): string | Uint8Array {
  return encoding === 'json' ? encodeJson(f) : encodeBinary(f);
}
