import type { FastifyInstance } from 'fastify';

import { HttpProblem } from '../errors.js';
import { getAttributionList, listAttributionLists } from '../payer/attribution.js';
import { consentResource, memberConsents, type MemberConsent } from '../payer/consents.js';
import { listRepresentatives, type Representative } from '../payer/representatives.js';
import { ORGANIZATION_IDENTIFIER_PATTERN } from '../smart/client-rules.js';
import type { AdminDeps } from './deps.js';
import {
  addMemberConsent,
  addRepresentative,
  endRepresentative,
  importAttribution,
  MEMBER_CONSENT_SCHEMA,
  PATIENT_ID_PROPERTY,
  patientAccessCsv,
  patientAccessMetrics,
  removeAttribution,
  REPRESENTATIVE_SCHEMA,
  withdrawConsent,
  YEAR_PROPERTY,
  type MemberConsentInput,
  type RepresentativeInput,
} from './operations/payer.js';
import { adminEvent, errorResponses, idParams, tagged } from './schemas.js';

const MAX_GROUP_BYTES = 64 * 1024 * 1024;
const count = { type: 'integer' } as const;
const appLine = {
  type: 'object',
  properties: { client_id: { type: 'string' }, client_name: { type: ['string', 'null'] }, unique_patients: count, patients_transferred_more_than_once: count, transfers: count },
} as const;
const reportResponse = {
  type: 'object',
  required: ['year', 'unique_patients', 'patients_transferred_more_than_once', 'transfers', 'apps'],
  properties: { year: count, unique_patients: count, patients_transferred_more_than_once: count, transfers: count, apps: { type: 'array', items: appLine } },
} as const;
const consentResponse = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    patient_id: { type: 'string' },
    kind: { type: 'string' },
    organization: { type: ['string', 'null'] },
    period_start: { type: 'string', format: 'date-time' },
    period_end: { type: ['string', 'null'], format: 'date-time' },
    recorded_by: { type: 'string' },
    created_at: { type: 'string', format: 'date-time' },
    withdrawn_at: { type: ['string', 'null'], format: 'date-time' },
    active: { type: 'boolean' },
    resource: { type: 'object', additionalProperties: true, description: 'the consent as a FHIR R4 Consent (Da Vinci HRex)' },
  },
} as const;
const representativeResponse = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    user_id: { type: 'string' },
    user_name: { type: ['string', 'null'] },
    fhir_user: { type: ['string', 'null'] },
    patient_id: { type: 'string' },
    status: { type: 'string' },
    period_start: { type: 'string', format: 'date-time' },
    period_end: { type: ['string', 'null'], format: 'date-time' },
    designated_by: { type: 'string' },
    created_at: { type: 'string', format: 'date-time' },
  },
} as const;
const listSummary = {
  type: 'object',
  properties: { id: { type: 'string' }, organization: { type: 'string' }, name: { type: ['string', 'null'] }, members: count, attributed_now: count, updated_at: { type: 'string', format: 'date-time' } },
} as const;

/**
 * CMS-0057-F: the Patient Access report, attribution lists (Da Vinci ATR Groups), members' consents and
 * authorized representatives (docs/cms-0057-f.md).
 */
export async function payerRoutes(app: FastifyInstance, deps: AdminDeps): Promise<void> {
  const { db } = deps;
  app.addContentTypeParser(['application/fhir+json'], { parseAs: 'string', bodyLimit: MAX_GROUP_BYTES }, (_request, body, done) => {
    try {
      done(null, JSON.parse(body as string));
    } catch {
      done(HttpProblem.invalid('the body is not JSON'), undefined);
    }
  });

  app.get<{ Querystring: { year: number; format: 'json' | 'csv' } }>(
    '/reports/patient-access',
    {
      schema: {
        ...tagged,
        summary: 'CMS-0057-F Patient Access API metrics for a calendar year (UTC): unique patients whose data went to a Patient Access app, those transferred more than once, per app',
        querystring: { type: 'object', required: ['year'], additionalProperties: false, properties: { year: YEAR_PROPERTY, format: { type: 'string', enum: ['json', 'csv'], default: 'json' } } },
        response: { 200: reportResponse, ...errorResponses },
      },
    },
    async (request, reply) => {
      const report = await patientAccessMetrics(deps, request.query.year);
      if (request.query.format === 'csv') {
        return reply.type('text/csv; charset=utf-8').header('content-disposition', `attachment; filename="patient-access-${report.year}.csv"`).send(patientAccessCsv(report));
      }
      return {
        year: report.year,
        unique_patients: report.patients,
        patients_transferred_more_than_once: report.patientsMoreThanOnce,
        transfers: report.transfers,
        apps: report.apps.map((a) => ({ client_id: a.clientId, client_name: a.clientName, unique_patients: a.patients, patients_transferred_more_than_once: a.patientsMoreThanOnce, transfers: a.transfers })),
      };
    },
  );

  app.post<{ Body: Record<string, unknown>; Querystring: { organization?: string } }>(
    '/attribution-lists',
    {
      bodyLimit: MAX_GROUP_BYTES,
      schema: {
        ...tagged,
        summary: "Import (or replace) an attribution list: a Da Vinci ATR Group (application/fhir+json); Group.id names the list, Group.identifier the organisation's NPI or TIN",
        querystring: { type: 'object', additionalProperties: false, properties: { organization: { type: 'string', pattern: ORGANIZATION_IDENTIFIER_PATTERN, description: "the organisation (system|value), when the Group's identifiers do not say it" } } },
        body: { type: 'object', required: ['resourceType'], properties: { resourceType: { type: 'string' } }, additionalProperties: true },
        response: { 200: { type: 'object', properties: { id: { type: 'string' }, organization: { type: 'string' }, members: count, created: { type: 'boolean' } } }, ...errorResponses },
      },
    },
    async (request) => importAttribution(deps, adminEvent(request), request.body, request.query.organization),
  );

  app.get<{ Querystring: { organization?: string } }>(
    '/attribution-lists',
    {
      schema: {
        ...tagged,
        summary: 'Attribution lists, with how many members each has and how many are attributed now',
        querystring: { type: 'object', additionalProperties: false, properties: { organization: { type: 'string', maxLength: 512 } } },
        response: { 200: { type: 'object', properties: { items: { type: 'array', items: listSummary } } }, ...errorResponses },
      },
    },
    async (request) => ({
      items: (await listAttributionLists(db, request.query.organization)).map((l) => ({ id: l.id, organization: l.organization, name: l.name, members: l.members, attributed_now: l.attributedNow, updated_at: l.updatedAt.toISOString() })),
    }),
  );

  app.get<{ Params: { id: string } }>(
    '/attribution-lists/:id',
    {
      schema: {
        ...tagged,
        summary: 'An attribution list with its members',
        params: idParams('id'),
        response: {
          200: {
            type: 'object',
            properties: {
              id: { type: 'string' },
              organization: { type: 'string' },
              name: { type: ['string', 'null'] },
              members: { type: 'array', items: { type: 'object', properties: { patient_id: { type: 'string' }, period_start: { type: ['string', 'null'] }, period_end: { type: ['string', 'null'] }, inactive: { type: 'boolean' } } } },
            },
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const list = await getAttributionList(db, request.params.id);
      if (!list) throw HttpProblem.notFound(`no attribution list ${request.params.id}`);
      return { ...list, members: list.members.map((m) => ({ patient_id: m.patientId, period_start: m.periodStart?.toISOString() ?? null, period_end: m.periodEnd?.toISOString() ?? null, inactive: m.inactive })) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/attribution-lists/:id',
    { schema: { ...tagged, summary: 'Delete an attribution list: its members are no longer attributed to the organisation', params: idParams('id'), response: { 204: { type: 'null' }, ...errorResponses } } },
    async (request, reply) => {
      await removeAttribution(deps, adminEvent(request), request.params.id);
      return reply.code(204).send();
    },
  );

  const patientParams = { type: 'object', required: ['patient_id'], properties: { patient_id: PATIENT_ID_PROPERTY } } as const;

  app.get<{ Params: { patient_id: string } }>(
    '/members/:patient_id/consents',
    { schema: { ...tagged, summary: "A member's consents (Provider Access opt-out, Payer-to-Payer opt-in, sensitive data exclusion), newest first, withdrawn ones included", params: patientParams, response: { 200: { type: 'object', properties: { items: { type: 'array', items: consentResponse } } }, ...errorResponses } } },
    async (request) => ({ items: (await memberConsents(db, request.params.patient_id)).map(consentView) }),
  );

  app.post<{ Params: { patient_id: string }; Body: MemberConsentInput }>(
    '/members/:patient_id/consents',
    { schema: { ...tagged, summary: "Record a member's consent on their behalf", params: patientParams, body: MEMBER_CONSENT_SCHEMA, response: { 201: consentResponse, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(consentView(await addMemberConsent(deps, adminEvent(request), request.params.patient_id, request.body))),
  );

  app.post<{ Params: { patient_id: string; id: string } }>(
    '/members/:patient_id/consents/:id/withdraw',
    {
      schema: {
        ...tagged,
        summary: "Withdraw a member's consent: it stops counting at the next FHIR request",
        params: { type: 'object', required: ['patient_id', 'id'], properties: { patient_id: PATIENT_ID_PROPERTY, id: { type: 'string', minLength: 1, maxLength: 64 } } },
        response: { 200: consentResponse, ...errorResponses },
      },
    },
    async (request) => consentView(await withdrawConsent(deps, adminEvent(request), request.params.patient_id, request.params.id)),
  );

  app.get<{ Querystring: { patient?: string; user?: string } }>(
    '/representatives',
    {
      schema: {
        ...tagged,
        summary: "Authorized representatives: a patient's, or a user's designations",
        querystring: { type: 'object', additionalProperties: false, minProperties: 1, properties: { patient: PATIENT_ID_PROPERTY, user: { type: 'string', maxLength: 256 } } },
        response: { 200: { type: 'object', properties: { items: { type: 'array', items: representativeResponse } } }, ...errorResponses },
      },
    },
    async (request) => ({ items: (await listRepresentatives(db, { patientId: request.query.patient, userId: request.query.user })).map(representativeView) }),
  );

  app.post<{ Body: RepresentativeInput }>(
    '/representatives',
    { schema: { ...tagged, summary: 'Designate a representative (active at once): a user who signs in as a RelatedPerson or Person acts for the patient', body: REPRESENTATIVE_SCHEMA, response: { 201: representativeResponse, ...errorResponses } } },
    async (request, reply) => reply.code(201).send(representativeView(await addRepresentative(deps, adminEvent(request), request.body))),
  );

  app.post<{ Params: { id: string } }>(
    '/representatives/:id/revoke',
    { schema: { ...tagged, summary: "Revoke a designation: the representative's grants for the patient end at once", params: idParams('id'), response: { 200: representativeResponse, ...errorResponses } } },
    async (request) => representativeView(await endRepresentative(deps, adminEvent(request), request.params.id)),
  );
}

function consentView(c: MemberConsent): Record<string, unknown> {
  return {
    id: c.id,
    patient_id: c.patientId,
    kind: c.kind,
    organization: c.organization,
    period_start: c.periodStart.toISOString(),
    period_end: c.periodEnd?.toISOString() ?? null,
    recorded_by: c.recordedBy,
    created_at: c.createdAt.toISOString(),
    withdrawn_at: c.withdrawnAt?.toISOString() ?? null,
    active: c.active,
    resource: consentResource(c),
  };
}

function representativeView(r: Representative): Record<string, unknown> {
  return {
    id: r.id,
    user_id: r.userId,
    user_name: r.userName,
    fhir_user: r.fhirUser,
    patient_id: r.patientId,
    status: r.status,
    period_start: r.periodStart.toISOString(),
    period_end: r.periodEnd?.toISOString() ?? null,
    designated_by: r.designatedBy,
    created_at: r.createdAt.toISOString(),
  };
}
