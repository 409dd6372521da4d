import { ProtocolError } from './errors.js';
import { CLIENT_ID_PATTERN, ID_PATTERN, LIMITS } from './limits.js';

/** Field checks shared by the binary and the JSON decoder, so both encodings accept exactly the same frames. */

export function userId(v: unknown, field: string, ref?: string): string {
  if (typeof v !== 'string' || !ID_PATTERN.test(v)) {
    throw new ProtocolError('invalid_field', `${field}: expected 1-${LIMITS.maxIdLength} chars of [A-Za-z0-9._@+=-]`, ref);
  }
  return v;
}

export function clientId(v: unknown, field: string, ref?: string): string {
  if (typeof v !== 'string' || !CLIENT_ID_PATTERN.test(v)) {
    throw new ProtocolError('invalid_field', `${field}: expected 1-${LIMITS.maxIdLength} visible ASCII chars`, ref);
  }
  return v;
}

export function messageId(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > LIMITS.maxMessageIdLength) {
    throw new ProtocolError('invalid_field', `${field}: expected 1-${LIMITS.maxMessageIdLength} chars`);
  }
  return v;
}

export function uint(v: unknown, field: string, ref?: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ProtocolError('invalid_field', `${field}: expected a non-negative safe integer`, ref);
  }
  return v;
}

export function bool(v: unknown, field: string): boolean {
  if (typeof v !== 'boolean') throw new ProtocolError('invalid_field', `${field}: expected a boolean`);
  return v;
}

export function text(v: unknown, field: string, max: number): string {
  if (typeof v !== 'string' || v.length > max) {
    throw new ProtocolError('invalid_field', `${field}: expected a string of at most ${max} chars`);
  }
  return v;
}

export function body(v: Uint8Array, ref?: string): Uint8Array {
  if (v.byteLength > LIMITS.maxBodyBytes) {
    throw new ProtocolError('frame_too_large', `body: ${v.byteLength} bytes exceeds ${LIMITS.maxBodyBytes}`, ref);
  }
  return v;
}

export function list<T>(v: unknown, field: string, max: number, item: (x: unknown, i: number) => T): T[] {
  if (!Array.isArray(v)) throw new ProtocolError('invalid_field', `${field}: expected an array`);
  if (v.length > max) throw new ProtocolError('invalid_field', `${field}: at most ${max} items`);
  return v.map(item);
}
