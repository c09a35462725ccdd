import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';

import type { AuditLog } from '../audit/audit.js';
import type { Config } from '../config/config.js';
import type { DB } from '../db/schema.js';
import type { MemberConsentKind } from '../db/tables/payer.js';
import { findPatients } from '../directory/patients.js';
import { HttpProblem } from '../errors.js';
import { pageHeaders } from '../http/page-headers.js';
import { memberConsents, recordMemberConsent, withdrawMemberConsent, withdrawMemberConsentsOfKind, type MemberConsent } from '../payer/consents.js';
import { acceptRepresentative, designateRepresentative, isRepresentativeUser, listRepresentatives, revokeRepresentative } from '../payer/representatives.js';
import { ORGANIZATION_IDENTIFIER_PATTERN } from '../smart/client-rules.js';
import { ACCOUNT_APPS_PATH, ACCOUNT_PRIVACY_PATH } from '../smart/profile.js';
import { findUser, findUserByUsername, type User } from '../users/users.js';

/**
 * The member's privacy choices under CMS-0057-F and Da Vinci PDex, on the account pages: opting out of
 * Provider Access, opting in to Payer-to-Payer (any payer or one, until a date), withholding sensitive data
 * from payer exchanges, and naming representatives (who accept before they may act). A representative
 * accepts here too. Every choice counts at the gateway's next request and is audited.
 */

export interface PrivacyHelpers {
  readonly sessionOf: (request: FastifyRequest, reply: FastifyReply) => Promise<{ accountId: string; uid: string } | undefined>;
  readonly signIn: (reply: FastifyReply) => FastifyReply;
  readonly csrfFor: (sessionUid: string) => string;
  readonly verifyCsrf: (sessionUid: string, csrf: string) => boolean;
}

interface Deps {
  readonly config: Config;
  readonly db: Kysely<DB>;
  readonly audit: AuditLog;
}

type Action =
  | { action: 'provider-access'; choice?: string }
  | { action: 'sensitive'; choice?: string }
  | { action: 'payer-to-payer'; organization?: string; until?: string }
  | { action: 'withdraw'; consent: string }
  | { action: 'designate'; username: string; until?: string }
  | { action: 'revoke'; representative: string }
  | { action: 'accept'; representative: string };

const DATE = '^\\d{4}-\\d{2}-\\d{2}$';
/** How far ahead an end date may be: far enough for any real choice (a child's representative until they come of age). */
const MAX_YEARS_AHEAD = 100;
const ID = { type: 'string', minLength: 1, maxLength: 64 } as const;
const ACTION_SCHEMA = {
  type: 'object',
  required: ['csrf', 'action'],
  properties: {
    csrf: { type: 'string', maxLength: 128 },
    action: { type: 'string', enum: ['provider-access', 'sensitive', 'payer-to-payer', 'withdraw', 'designate', 'revoke', 'accept'] },
    choice: { type: 'string', enum: ['opt-out', 'opt-in', 'exclude', 'share'] },
    organization: { type: 'string', maxLength: 400 },
    until: { type: 'string', maxLength: 10 },
    consent: ID,
    username: { type: 'string', maxLength: 128 },
    representative: ID,
  },
} as const;

/** What the page shows of the member's choices, which a banner must agree with. */
interface Shown {
  readonly optedOut: boolean;
  readonly excludesSensitive: boolean;
  readonly optIns: number;
  /** The kinds of choice the history shows withdrawn. */
  readonly withdrawn: ReadonlySet<MemberConsentKind>;
  readonly pending: boolean;
  readonly revoked: boolean;
  readonly actingFor: boolean;
}

/**
 * The banner after each choice (the redirect's `done`), and the state it reports. `done` is a query string
 * anyone can link to: a banner is shown only while the page shows what it says.
 */
const DONE = {
  'opted-out': { message: 'Provider organisations can no longer see your information through the payer.', holds: (s) => s.optedOut },
  'opted-in': { message: 'Your providers can see your information through the payer again.', holds: (s) => !s.optedOut && s.withdrawn.has('provider-access-opt-out') },
  excluded: { message: 'Sensitive information is now withheld from providers and other payers.', holds: (s) => s.excludesSensitive },
  shared: { message: 'Sensitive information is shared with providers and other payers again.', holds: (s) => !s.excludesSensitive && s.withdrawn.has('exclude-sensitive') },
  'payer-opt-in': { message: 'The payer you chose can now receive your information.', holds: (s) => s.optIns > 0 },
  withdrawn: { message: 'Your choice was withdrawn.', holds: (s) => s.withdrawn.size > 0 },
  designated: { message: 'We asked the person to accept. They can act for you once they accept.', holds: (s) => s.pending },
  revoked: { message: 'That person can no longer act for you.', holds: (s) => s.revoked },
  accepted: { message: 'You can now act for that person.', holds: (s) => s.actingFor },
} as const satisfies Record<string, { readonly message: string; readonly holds: (shown: Shown) => boolean }>;

type Done = keyof typeof DONE;

/** The banner for `done`: an own key only (not `constructor`), and only while it holds. */
function doneBanner(done: string | undefined, shown: Shown): string | null {
  const banner = done !== undefined && Object.hasOwn(DONE, done) ? DONE[done as Done] : undefined;
  return banner?.holds(shown) ? banner.message : null;
}

export async function privacyRoutes(app: FastifyInstance, deps: Deps, helpers: PrivacyHelpers): Promise<void> {
  const { config, db, audit } = deps;
  const basePath = config.basePath;
  const self = `${basePath}${ACCOUNT_PRIVACY_PATH}`;

  /** The member's own record: a user whose fhirUser is a Patient. */
  const memberOf = (user: User): string | undefined => {
    const [type, id] = user.fhirUser.split('/');
    return type === 'Patient' && id ? id : undefined;
  };

  async function render(request: FastifyRequest, reply: FastifyReply, user: User, sessionUid: string, extra: { done?: string | undefined; error?: string; status?: number } = {}) {
    const patientId = memberOf(user);
    const consents = patientId ? await memberConsents(db, patientId) : [];
    const live = (kind: MemberConsentKind) => consents.filter((c) => c.kind === kind && c.active);
    const everDesignated = patientId ? await listRepresentatives(db, { patientId }) : [];
    const designations = everDesignated.filter((r) => r.status !== 'revoked');
    const actingFor = (await listRepresentatives(db, { userId: user.id })).filter((r) => r.status !== 'revoked');
    const names = new Map((await findPatients(db, actingFor.map((r) => r.patientId))).map((p) => [p.id, p.name]));
    const shown: Shown = {
      optedOut: live('provider-access-opt-out').length > 0,
      excludesSensitive: live('exclude-sensitive').length > 0,
      optIns: live('payer-to-payer-opt-in').length,
      withdrawn: new Set(consents.filter((c) => c.withdrawnAt !== null).map((c) => c.kind)),
      pending: designations.some((r) => r.status === 'pending'),
      revoked: everDesignated.some((r) => r.status === 'revoked'),
      actingFor: actingFor.some((r) => r.status === 'active'),
    };
    pageHeaders(reply, config);
    return reply.code(extra.status ?? 200).view('account-privacy.ejs', {
      basePath,
      action: self,
      csrf: helpers.csrfFor(sessionUid),
      userName: user.name,
      appsPage: `${basePath}${ACCOUNT_APPS_PATH}`,
      done: doneBanner(extra.done, shown),
      error: extra.error ?? null,
      member: patientId !== undefined,
      optedOut: shown.optedOut,
      excludesSensitive: shown.excludesSensitive,
      optIns: live('payer-to-payer-opt-in').map((c) => ({ id: c.id, payer: c.organization ?? 'Any payer', until: c.periodEnd ? lastDay(c.periodEnd) : null })),
      history: consents.map((c) => ({ what: describe(c), since: day(c.periodStart), until: c.periodEnd ? lastDay(c.periodEnd) : null, withdrawn: c.withdrawnAt ? day(c.withdrawnAt) : null, by: c.recordedBy.startsWith('user:') ? 'you' : 'your plan' })),
      representatives: designations.map((r) => ({ id: r.id, name: r.userName ?? r.userId, status: r.status, until: r.periodEnd ? lastDay(r.periodEnd) : null })),
      actingFor: actingFor.map((r) => ({ id: r.id, name: names.get(r.patientId) ?? r.patientId, status: r.status, until: r.periodEnd ? lastDay(r.periodEnd) : null })),
    });
  }

  async function signedIn(request: FastifyRequest, reply: FastifyReply): Promise<{ user: User; uid: string } | undefined> {
    const session = await helpers.sessionOf(request, reply);
    const user = session ? await findUser(db, session.accountId) : undefined;
    return session && user ? { user, uid: session.uid } : undefined;
  }

  app.get<{ Querystring: { done?: string } }>(ACCOUNT_PRIVACY_PATH, async (request, reply) => {
    const who = await signedIn(request, reply);
    if (!who) return helpers.signIn(reply);
    const done = typeof request.query.done === 'string' ? request.query.done : undefined;
    return render(request, reply, who.user, who.uid, { done });
  });

  app.post<{ Body: Record<string, string | undefined> }>(ACCOUNT_PRIVACY_PATH, { schema: { body: ACTION_SCHEMA } }, async (request, reply) => {
    const who = await signedIn(request, reply);
    if (!who) return helpers.signIn(reply);
    if (!helpers.verifyCsrf(who.uid, request.body.csrf ?? '')) throw HttpProblem.forbidden('this page has expired; reload it');
    const by = { actorType: 'user' as const, actorId: who.user.id, userId: who.user.id, sourceIp: request.ip, requestId: request.id };
    let done: Done;
    try {
      done = await perform(request.body as unknown as Action, who.user, by);
    } catch (error) {
      if (!(error instanceof HttpProblem) || error.statusCode >= 500) throw error;
      return render(request, reply, who.user, who.uid, { error: error.message, status: error.statusCode });
    }
    return reply.redirect(`${self}?done=${done}`, 303);
  });

  type By = { actorType: 'user'; actorId: string; userId: string; sourceIp: string; requestId: string };

  async function perform(body: Action, user: User, by: By): Promise<Done> {
    const patientId = memberOf(user);
    const recordedBy = `user:${user.id}`;
    const member = (): string => {
      if (!patientId) throw HttpProblem.forbidden('only a member (signed in to their own record) makes this choice');
      return patientId;
    };
    const recorded = async (consent: MemberConsent) => {
      await audit.record({ ...by, type: 'member_consent.recorded', patientId: consent.patientId, details: { consent: consent.id, kind: consent.kind, ...(consent.organization ? { organization: consent.organization } : {}), by: 'account page' } });
    };
    const withdrawn = async (consents: readonly MemberConsent[]) => {
      for (const c of consents) await audit.record({ ...by, type: 'member_consent.withdrawn', patientId: c.patientId, details: { consent: c.id, kind: c.kind, by: 'account page' } });
    };
    switch (body.action) {
      case 'provider-access': {
        const id = member();
        if (body.choice === 'opt-out') {
          if (!(await memberConsents(db, id)).some((c) => c.kind === 'provider-access-opt-out' && c.active)) await recorded(await recordMemberConsent(db, { patientId: id, kind: 'provider-access-opt-out', recordedBy }));
          return 'opted-out';
        }
        if (body.choice !== 'opt-in') throw HttpProblem.invalid('choose to opt out or back in');
        await withdrawn(await withdrawMemberConsentsOfKind(db, id, 'provider-access-opt-out'));
        return 'opted-in';
      }
      case 'sensitive': {
        const id = member();
        if (body.choice === 'exclude') {
          if (!(await memberConsents(db, id)).some((c) => c.kind === 'exclude-sensitive' && c.active)) await recorded(await recordMemberConsent(db, { patientId: id, kind: 'exclude-sensitive', recordedBy }));
          return 'excluded';
        }
        if (body.choice !== 'share') throw HttpProblem.invalid('choose to withhold or share sensitive information');
        await withdrawn(await withdrawMemberConsentsOfKind(db, id, 'exclude-sensitive'));
        return 'shared';
      }
      case 'payer-to-payer': {
        const id = member();
        const organization = body.organization?.trim() || undefined;
        if (organization !== undefined && !new RegExp(ORGANIZATION_IDENTIFIER_PATTERN).test(organization)) throw HttpProblem.invalid('The payer must be written as system|value, for example http://example.org/payer-ids|12345, or left empty for any payer.');
        const periodEnd = untilDate(body.until);
        await recorded(await recordMemberConsent(db, { patientId: id, kind: 'payer-to-payer-opt-in', organization, periodEnd, recordedBy }));
        return 'payer-opt-in';
      }
      case 'withdraw': {
        if (!body.consent) throw HttpProblem.invalid('Say which choice to withdraw.');
        const id = member();
        const consent = await withdrawMemberConsent(db, id, body.consent);
        if (!consent) {
          // Another patient's consent is answered as one that does not exist.
          const known = (await memberConsents(db, id)).some((c) => c.id === body.consent);
          throw HttpProblem.notFound(known ? 'That choice was already withdrawn.' : 'There is no such choice of yours to withdraw.');
        }
        await withdrawn([consent]);
        return 'withdrawn';
      }
      case 'designate': {
        const id = member();
        const person = body.username ? await findUserByUsername(db, body.username.trim()) : undefined;
        // The same answer for an unknown name and for someone who cannot represent: no account is revealed.
        if (!person || !isRepresentativeUser(person.fhirUser) || person.id === user.id) throw HttpProblem.invalid('No person with that user name can be named as your representative. Ask them for the user name they sign in with.');
        const representative = await designateRepresentative(db, { userId: person.id, patientId: id, status: 'pending', periodEnd: untilDate(body.until), designatedBy: recordedBy });
        if (!representative) throw HttpProblem.conflict('That person already acts for you, or was already asked to.');
        await audit.record({ ...by, type: 'representative.designated', patientId: id, details: { representative: representative.id, for_user: person.id, status: 'pending', by: 'account page' } });
        return 'designated';
      }
      case 'revoke': {
        const id = member();
        if (!body.representative) throw HttpProblem.invalid('Say whom to revoke.');
        const revoked = await revokeRepresentative(db, body.representative, id);
        if (!revoked) throw HttpProblem.notFound('That person no longer acts for you.');
        await audit.record({ ...by, type: 'representative.revoked', patientId: id, details: { representative: body.representative, for_user: revoked.representative.userId, grants_revoked: revoked.grantsRevoked, by: 'account page' } });
        return 'revoked';
      }
      case 'accept': {
        if (!body.representative) throw HttpProblem.invalid('Say which request to accept.');
        const accepted = await acceptRepresentative(db, body.representative, user.id);
        if (!accepted) throw HttpProblem.notFound('There is no request waiting for you to accept.');
        await audit.record({ ...by, type: 'representative.accepted', patientId: accepted.patientId, details: { representative: accepted.id, by: 'account page' } });
        return 'accepted';
      }
    }
  }

  /**
   * A date the member picks, through the end of which the choice lasts (stored as the next day's start, UTC).
   * At most {@link MAX_YEARS_AHEAD} years ahead: JavaScript holds years past 9999, which the database refuses.
   */
  function untilDate(value: string | undefined): Date | undefined {
    if (!value) return undefined;
    if (!new RegExp(DATE).test(value)) throw HttpProblem.invalid('The end date must be a date (YYYY-MM-DD).');
    const date = new Date(`${value}T00:00:00Z`);
    if (Number.isNaN(date.getTime()) || date.toISOString().slice(0, 10) !== value) throw HttpProblem.invalid('The end date is not a valid date.');
    const now = new Date();
    const end = new Date(date.getTime() + 86_400_000);
    if (end <= now) throw HttpProblem.invalid('The end date is in the past.');
    const latest = new Date(now);
    latest.setUTCFullYear(now.getUTCFullYear() + MAX_YEARS_AHEAD);
    if (value > day(latest)) throw HttpProblem.invalid(`The end date can be at most ${MAX_YEARS_AHEAD} years from today: ${day(latest)} or earlier.`);
    return end;
  }
}

function day(date: Date): string {
  return date.toISOString().slice(0, 10);
}

/** The last day a period covers: its end is exclusive. */
function lastDay(end: Date): string {
  return day(new Date(end.getTime() - 1));
}

function describe(consent: MemberConsent): string {
  switch (consent.kind) {
    case 'provider-access-opt-out':
      return 'Opted out of sharing with your providers';
    case 'payer-to-payer-opt-in':
      return `Opted in to sharing with ${consent.organization ?? 'any other payer'}`;
    case 'exclude-sensitive':
      return 'Withheld sensitive information';
  }
}
