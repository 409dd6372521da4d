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

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** UTF-8 cannot carry a lone surrogate; the binary encoder writes U+FFFD for one, so JSON decodes it the same way. */
function wellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, '\ufffd');
}

export function messageId(v: unknown, field: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > LIMITS.maxMessageIdLength) {
    throw new ProtocolError('invalid_field', `${field}: expected 1-${LIMITS.maxMessageIdLength} chars`);
  }
  return wellFormed(v);
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
  return wellFormed(v);
}

export function list<T>(v: unknown, field: string, max: number, item: (x: unknown, i: number) => T, ref?: string): T[] {
  if (!Array.isArray(v)) throw new ProtocolError('invalid_field', `${field}: expected an array`, ref);
  if (v.length > max) throw new ProtocolError('invalid_field', `${field}: at most ${max} items`, ref);
  return v.map(item);
}
