import { createUser, resetPassword, updateUser, type UserRecord } from '../../users/users.js';
import type { AdminDeps } from '../deps.js';
import { inputChecker } from './input.js';
import type { Operator } from './operator.js';

/** `Practitioner/123`, relative to the FHIR base: the resource types SMART allows for fhirUser. */
const fhirUser = { type: 'string', pattern: '^(Practitioner|PractitionerRole|Patient|RelatedPerson|Person)/[A-Za-z0-9\\-.]{1,64}$', description: 'Practitioner/<id>, PractitionerRole/<id>, Patient/<id>, RelatedPerson/<id> or Person/<id>' } as const;
const password = { type: 'string', minLength: 10, maxLength: 1024, description: 'at least 10 characters' } as const;
const patients = { type: 'array', maxItems: 100, uniqueItems: true, items: { type: 'string', maxLength: 64 }, description: 'patients the user may act for (a caregiver), from the directory' } as const;
const roles = { type: 'array', maxItems: 20, uniqueItems: true, items: { type: 'string', minLength: 1, maxLength: 64 }, description: 'admin and auditor sign in to the operator console (/admin); auditor reads only' } as const;
const name = { type: 'string', minLength: 1, maxLength: 200 } as const;

export interface NewUser {
  id?: string;
  username: string;
  password?: string;
  fhirUser: string;
  name: string;
  roles?: string[];
  patients?: string[];
}

export interface UserChange {
  fhirUser?: string;
  name?: string;
  roles?: string[];
  disabled?: boolean;
  patients?: string[];
}

export const NEW_USER_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['username', 'fhirUser', 'name'],
  properties: { id: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', description: '1–64 of A–Z a–z 0–9 . _ -' }, username: { type: 'string', pattern: '^[A-Za-z0-9._@+-]{1,128}$', description: '1–128 of A–Z a–z 0–9 . _ @ + -' }, password, fhirUser, name, roles, patients },
} as const;
export const USER_CHANGE_SCHEMA = { type: 'object', additionalProperties: false, minProperties: 1, properties: { fhirUser, name, roles, disabled: { type: 'boolean' }, patients } } as const;
export const NEW_PASSWORD_SCHEMA = { type: 'object', additionalProperties: false, required: ['password'], properties: { password } } as const;

export const checkNewUser = inputChecker<NewUser>(NEW_USER_SCHEMA);
export const checkUserChange = inputChecker<UserChange>(USER_CHANGE_SCHEMA);
export const checkNewPassword = inputChecker<{ password: string }>(NEW_PASSWORD_SCHEMA);

export async function addUser(deps: AdminDeps, by: Operator, input: NewUser): Promise<UserRecord> {
  const user = await createUser(deps.db, input);
  await deps.audit.record({ ...by, type: 'user.created', userId: user.id, details: { username: user.username, fhirUser: user.fhirUser, roles: user.roles } });
  return user;
}

/** Changes a user; disabling one also revokes every grant and ends every session the user holds. */
export async function changeUser(deps: AdminDeps, by: Operator, id: string, change: UserChange): Promise<UserRecord> {
  const user = await updateUser(deps.db, id, change);
  deps.users.invalidate(id);
  await deps.audit.record({ ...by, type: 'user.updated', userId: user.id, details: { changed: Object.keys(change), disabled: user.disabled, ...(change.roles ? { roles: user.roles } : {}) } });
  return user;
}

/** Sets a new password and lifts the sign-in slowdown on the user name. */
export async function setUserPassword(deps: AdminDeps, by: Operator, id: string, newPassword: string): Promise<void> {
  await resetPassword(deps.db, deps.box, id, newPassword);
  await deps.audit.record({ ...by, type: 'user.password_reset', userId: id });
}
