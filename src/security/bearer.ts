import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * The token of an `Authorization: Bearer …` header (RFC 6750 §2.1), or undefined when the header is absent or
 * another scheme. The scheme is case-insensitive; the token is taken as sent, checked only by whoever knows
 * what a valid one is.
 */
export function bearerToken(authorization: string | undefined): string | undefined {
  return /^Bearer +(\S+) *$/i.exec(authorization ?? '')?.[1];
}

/** Compares a presented secret with the expected one in constant time, whatever their lengths (both hashed first). */
export function sameSecret(presented: string, expected: string): boolean {
  return timingSafeEqual(createHash('sha256').update(presented).digest(), createHash('sha256').update(expected).digest());
}
