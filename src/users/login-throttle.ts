import { isIPv6 } from 'node:net';

import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import { Statement } from '../db/statements.js';
import type { LoginThrottleTable } from '../db/tables/login-throttle.js';
import type { SecretBox } from '../security/secret-box.js';

/**
 * Sign-in throttling, shared by every server process through the database (NIST SP 800-63B §5.2.2 rate
 * limiting; OWASP Authentication Cheat Sheet §Protect against automated attacks).
 *
 * Each attempt is counted, in one `INSERT … ON CONFLICT DO UPDATE` per key, before its password is checked:
 * concurrent attempts queue on the row lock and each sees the count the previous one left, so a burst of N
 * is counted N times and those over budget are refused without running argon2. Keys are a user name
 * (`account`: unknown names are throttled exactly like real ones, so a refusal tells nothing), a device
 * cookie (`device`, device-cookie.ts) and the client's address (`source`, across every user name). They are
 * stored as keyed hashes only.
 */
export type ThrottleKind = LoginThrottleTable['kind'];

/**
 * How fast attempts on one key may come. The first `free` attempts pass at once; after the n-th (n ≥ free)
 * the next is due `baseSeconds · growth^(n − free)` later, at most `maxSeconds`; an attempt passes when it is
 * at most `toleranceSeconds` early. A key is forgotten `forgetSeconds` after its next attempt became due.
 */
export interface ThrottlePolicy {
  readonly free: number;
  readonly baseSeconds: number;
  readonly growth: number;
  readonly maxSeconds: number;
  readonly toleranceSeconds: number;
  readonly forgetSeconds: number;
}

/**
 * Per user name, or per device for a browser with a device cookie: five attempts cover typing mistakes
 * and a stale saved password; then the wait doubles from 30 s to 15 min. That slows, and never locks: the
 * owner can always sign in again later, and at once from a browser they signed in with before. It lets
 * through 12 guesses in the first hour and 4 an hour after that (about 100 a day), whatever the number of
 * attacking addresses. A day without attempts forgets the key: last week's typos do not slow today's
 * sign-in, and an attacker gains nothing by pausing for less.
 */
const PER_ACCOUNT: ThrottlePolicy = { free: 5, baseSeconds: 30, growth: 2, maxSeconds: 15 * 60, toleranceSeconds: 0, forgetSeconds: 24 * 3600 };

/**
 * Per source address, across user names (against password spraying): 100 failed attempts an hour with bursts
 * of 10, as a generic cell rate algorithm (one attempt every 36 s, up to 9 intervals early), so at most 10 in
 * any minute and 110 in any hour. Successful sign-ins are given back (`uncountAttempt`), so many people
 * behind one address (a hospital's NAT) only share the allowance for their mistakes. The address is the one
 * Fastify determined under TRUST_PROXY; behind a proxy that is not trusted every client shares the proxy's.
 */
const SOURCE_FAILURES_PER_HOUR = 100;
const SOURCE_BURST = 10;
const PER_SOURCE: ThrottlePolicy = {
  free: 0,
  baseSeconds: 3600 / SOURCE_FAILURES_PER_HOUR,
  growth: 1,
  maxSeconds: 3600 / SOURCE_FAILURES_PER_HOUR,
  toleranceSeconds: ((SOURCE_BURST - 1) * 3600) / SOURCE_FAILURES_PER_HOUR,
  forgetSeconds: 0,
};

/** Registrations from one source: `perHour` an hour, in bursts of at most 20 (REGISTRATION_PER_HOUR). */
export function registrationPolicy(perHour: number): ThrottlePolicy {
  const interval = 3600 / perHour;
  return { free: 0, baseSeconds: interval, growth: 1, maxSeconds: interval, toleranceSeconds: (Math.min(20, perHour) - 1) * interval, forgetSeconds: 0 };
}

const POLICIES: Readonly<Record<Exclude<ThrottleKind, 'registration'>, ThrottlePolicy>> = { account: PER_ACCOUNT, device: PER_ACCOUNT, source: PER_SOURCE };

export interface ThrottleKey {
  readonly kind: ThrottleKind;
  readonly hash: string;
}

/**
 * The key for a normalised user name, a device id or a source (`sourceOf`). A MAC, not a plain hash: user
 * names and addresses are guessable, so only the server can tell which row is whose. A new SECRET_KEY
 * starts every key afresh.
 */
export function throttleKey(box: SecretBox, kind: ThrottleKind, value: string): ThrottleKey {
  return { kind, hash: box.mac('login-throttle', `${kind}:${value}`) };
}

/** The user name as throttled: case and Unicode compatibility forms do not make a new name to guess on. */
export function loginName(username: string): string {
  return username.trim().normalize('NFKC').toLowerCase();
}

/**
 * The source an address belongs to. An IPv6 client is normally given a whole /64 and can change the rest at
 * will, so the /64 is the source; an IPv4-mapped IPv6 address is its IPv4 address.
 */
export function sourceOf(ip: string): string {
  const address = ip.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = '', tail] = address.split('::');
  const groups = (part: string) => (part ? part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : []);
  const first = groups(head);
  const all = tail === undefined ? first : [...first, ...Array<string>(8 - first.length - groups(tail).length).fill('0'), ...groups(tail)];
  return `${all.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

export interface Admission {
  readonly admitted: boolean;
  /** Seconds until an attempt on this key would pass (meaningful when refused). */
  readonly retryAfterSeconds: number;
}

/**
 * The wait after the `hits`-th attempt passed, for a policy given as parameters `$free`, `$base`, `$growth`
 * and `$max` ({@link policyValues}): every policy runs the same statement text, planned once per connection.
 */
function delay(hits: string, [free, base, growth, max]: readonly [string, string, string, string]): string {
  return `(case when (${hits}) < ${free}::int then 0 else least(${base}::float8 * power(${growth}::float8, (${hits}) - ${free}::int), ${max}::float8) end) * interval '1 second'`;
}

/** `free`, `baseSeconds`, `growth`, `maxSeconds`: the parameters of {@link delay}. */
function policyValues(p: ThrottlePolicy): [number, number, number, number] {
  return [p.free, p.baseSeconds, p.growth, p.maxSeconds];
}

/**
 * Counts one attempt: $1 kind, $2 key hash, $3–$6 the policy's delay, $7 its tolerance, $8 its forgetting time
 * (seconds). `clock_timestamp()`, not `now()`: a statement that started first may take the lock last, and must
 * not find the previous holder's time in its future.
 */
const COUNT = new Statement<{ admitted: boolean; retry_after: number }>(`
  insert into login_throttle as t (kind, key_hash, hits, next_at, expires_at, last_admitted)
  select $1::text, $2::text, 1, c.now + ${delay('1', ['$3', '$4', '$5', '$6'])}, c.now + ${delay('1', ['$3', '$4', '$5', '$6'])} + $8::float8 * interval '1 second', true
  from (select clock_timestamp() as now) c
  on conflict (kind, key_hash) do update set (hits, next_at, expires_at, last_admitted) = (
    select case when s.admitted then s.hits + 1 else t.hits end,
           case when s.admitted then s.due + ${delay('s.hits + 1', ['$3', '$4', '$5', '$6'])} else t.next_at end,
           case when s.admitted then s.due + ${delay('s.hits + 1', ['$3', '$4', '$5', '$6'])} + $8::float8 * interval '1 second' else t.expires_at end,
           s.admitted
    from (
      select f.hits, f.due, f.due <= f.now + $7::float8 * interval '1 second' as admitted
      from (
        select c.now,
               case when t.expires_at <= c.now then 0 else t.hits end as hits,
               case when t.expires_at <= c.now then c.now else greatest(t.next_at, c.now) end as due
        from (select clock_timestamp() as now) c
      ) f
    ) s
  )
  returning last_admitted as admitted, greatest(1, ceil(extract(epoch from next_at - clock_timestamp()) - $7::float8))::int as retry_after`);

/** The last attempt counted on a key given back: $1 kind, $2 key hash, $3–$6 the policy's delay. */
const uncounting = (kind: string, hash: string, delays: readonly [string, string, string, string]) =>
  `update login_throttle set hits = hits - 1, next_at = next_at - ${delay('hits', delays)} where kind = ${kind}::text and key_hash = ${hash}::text and hits > 0`;
const UNCOUNT = new Statement(uncounting('$1', '$2', ['$3', '$4', '$5', '$6']));

/** A key started afresh: $1 kind, $2 key hash. */
const resetting = (kind: string, hash: string) => `delete from login_throttle where kind = ${kind}::text and key_hash = ${hash}::text`;
const RESET = new Statement(resetting('$1', '$2'));

/**
 * A successful sign-in: the own key ($1, $2) reset, the source's attempt ($3, $4, policy $5–$8) given back and
 * the user ($9) signed in, if its stored hash is still the one checked ($11) and it is not disabled: its last
 * sign-in set and, when $10 is not null, $10 stored as its hash. Whether the user was signed in is returned:
 * an operator may have set a new password or disabled the user while the password was being checked.
 */
const SETTLE = new Statement<{ signed_in: boolean }>(`
  with reset as (${resetting('$1', '$2')}),
       given_back as (${uncounting('$3', '$4', ['$5', '$6', '$7', '$8'])}),
       signed_in as (
         update users set last_login_at = now(), password_hash = coalesce($10::text, password_hash)
         where id = $9::text and password_hash = $11::text and not disabled
         returning 1
       )
  select exists (select 1 from signed_in) as signed_in`);

/**
 * Counts one attempt on `key` and says whether it may go on to the password check. Atomic: one statement,
 * serialised per key by its row lock.
 */
export async function countAttempt(db: Kysely<DB>, key: ThrottleKey, policy?: ThrottlePolicy): Promise<Admission> {
  const p = policy ?? policyOf(key);
  const row = (await COUNT.first(db, [key.kind, key.hash, ...policyValues(p), p.toleranceSeconds, p.forgetSeconds]))!;
  return { admitted: row.admitted, retryAfterSeconds: row.retry_after };
}

/** Gives back the last attempt counted on `key`: for an attempt that checked no password, or succeeded. */
export async function uncountAttempt(db: Kysely<DB>, key: ThrottleKey): Promise<void> {
  await UNCOUNT.execute(db, [key.kind, key.hash, ...policyValues(policyOf(key))]);
}

/** Starts `key` afresh (a successful sign-in, a new password). */
export async function resetThrottle(db: Kysely<DB>, key: ThrottleKey): Promise<void> {
  await RESET.execute(db, [key.kind, key.hash]);
}

/**
 * A successful sign-in in one statement: `own` (the account or device) starts afresh, the attempt counted on
 * `source` is given back, and the user is signed in if `checked` is still its hash and it is not disabled (its
 * last sign-in set and, with `renewed`, its hash replaced). False when an operator changed the password or
 * disabled the user meanwhile.
 */
export async function settleSignIn(db: Kysely<DB>, own: ThrottleKey, source: ThrottleKey, userId: string, checked: string, renewed?: string): Promise<boolean> {
  const row = await SETTLE.first(db, [own.kind, own.hash, source.kind, source.hash, ...policyValues(policyOf(source)), userId, renewed ?? null, checked]);
  return row?.signed_in === true;
}

function policyOf(key: ThrottleKey): ThrottlePolicy {
  if (key.kind === 'registration') throw new Error('registrations are counted with a policy given');
  return POLICIES[key.kind];
}

export async function purgeLoginThrottle(db: Kysely<DB>): Promise<number> {
  const result = await db.deleteFrom('login_throttle').where('expires_at', '<', sql<Date>`now()`).executeTakeFirst();
  return Number(result.numDeletedRows);
}
