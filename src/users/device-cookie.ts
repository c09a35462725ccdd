import { randomBytes } from 'node:crypto';

import type { SecretBox } from '../security/secret-box.js';

/**
 * Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): a browser that signed in
 * as a user keeps a token, made by the server, binding that user name to a random device id. An attempt
 * carrying a valid token for the name typed is throttled per device instead of per user name, so an
 * attacker's failures, which slow the user name, do not keep its owner out. A stolen token buys its thief
 * one device's allowance, and the per-source limit still applies.
 *
 * The cookie holds the tokens of the last few people who signed in with the browser (a shared family
 * computer), newest first, joined by `~`; each is `<issued, base-36 seconds>.<device id>.<MAC>`, the MAC
 * covering both and the normalised user name, which the cookie does not contain.
 */
export const DEVICE_COOKIE = 'smart_device';
/** Renewed at every sign-in; long enough for someone who signs in every few months. */
export const DEVICE_COOKIE_SECONDS = 180 * 86_400;
const MAX_TOKENS = 4;
const PURPOSE = 'login-device';
const TOKEN = /^([0-9a-z]{1,10})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;

interface Token {
  readonly text: string;
  readonly issued: string;
  readonly device: string;
  readonly mac: string;
}

/** The device id of the cookie's token for `name` (normalised), if it holds a valid one. */
export function deviceOf(box: SecretBox, cookie: string | undefined, name: string, now = Date.now()): string | undefined {
  return tokensOf(cookie, now).find((t) => isFor(box, t, name))?.device;
}

/** The cookie after a sign-in as `name`: a new token for it in front, its older ones and expired ones gone. */
export function rememberDevice(box: SecretBox, cookie: string | undefined, name: string, now = Date.now()): string {
  const issued = Math.floor(now / 1000).toString(36);
  const device = randomBytes(16).toString('base64url');
  const fresh = `${issued}.${device}.${box.mac(PURPOSE, `${issued}.${device}.${name}`)}`;
  const others = tokensOf(cookie, now).filter((t) => !isFor(box, t, name));
  return [fresh, ...others.map((t) => t.text)].slice(0, MAX_TOKENS).join('~');
}

/** The value of the cookie `name` in a Cookie header (RFC 6265 §5.4), if present. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const pair of (header ?? '').split(';')) {
    const eq = pair.indexOf('=');
    if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

function tokensOf(cookie: string | undefined, now: number): Token[] {
  const tokens: Token[] = [];
  for (const text of (cookie ?? '').split('~').slice(0, MAX_TOKENS)) {
    const match = TOKEN.exec(text);
    if (!match) continue;
    if (now - parseInt(match[1]!, 36) * 1000 > DEVICE_COOKIE_SECONDS * 1000) continue;
    tokens.push({ text, issued: match[1]!, device: match[2]!, mac: match[3]! });
  }
  return tokens;
}

function isFor(box: SecretBox, token: Token, name: string): boolean {
  return box.verifyMac(PURPOSE, `${token.issued}.${token.device}.${name}`, token.mac);
}
