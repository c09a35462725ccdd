/**
 * The errors the sandbox launcher can make a launch end in, so that an app's error handling can be tried.
 * Each is the error a real failure of its kind gives, at the point where it would happen; the description
 * says it was simulated, so that no one mistakes it for a fault of the server.
 */
export const SIMULATED_ERRORS = {
  launch_invalid: { label: 'Invalid launch', where: 'authorize', status: 302, error: 'invalid_request', description: 'launch is unknown or expired: the EHR must create a new one' },
  launch_expired: { label: 'Expired launch', where: 'authorize', status: 302, error: 'invalid_request', description: 'launch is unknown or expired: the EHR must create a new one' },
  bad_aud: { label: 'Bad aud (FHIR server) at authorization', where: 'authorize', status: 302, error: 'invalid_request', description: 'aud is not a FHIR server this server issues tokens for (simulated by the sandbox launcher)' },
  consent_denied: { label: 'User denies consent', where: 'authorize', status: 302, error: 'access_denied', description: 'the user denied access (simulated by the sandbox launcher)' },
  token_failure: { label: 'Token endpoint failure', where: 'token', status: 500, error: 'server_error', description: 'the token endpoint failed (simulated by the sandbox launcher)' },
  bad_client_credentials: { label: 'Bad client credentials at the token endpoint', where: 'token', status: 401, error: 'invalid_client', description: 'client authentication failed (simulated by the sandbox launcher)' },
  invalid_refresh_token: { label: 'Invalid refresh token', where: 'refresh', status: 400, error: 'invalid_grant', description: 'the refresh token is invalid (simulated by the sandbox launcher)' },
  expired_access_token: { label: 'Expired access token at the FHIR server', where: 'fhir', status: 401, error: 'invalid_token', description: 'the access token has expired' },
  patient_not_found: { label: 'Patient in context not found at the FHIR server', where: 'fhir', status: 404, error: 'not-found', description: 'the patient in context does not exist on the FHIR server' },
} as const satisfies Record<string, { label: string; where: 'authorize' | 'token' | 'refresh' | 'fhir'; status: number; error: string; description: string }>;

export type SimulatedError = keyof typeof SIMULATED_ERRORS;

export function isSimulatedError(value: string | null | undefined): value is SimulatedError {
  return !!value && Object.hasOwn(SIMULATED_ERRORS, value);
}

/** The patient id a `patient_not_found` launch puts in context: one no FHIR server of ours holds. */
export const MISSING_PATIENT = 'sandbox-no-such-patient';

/** The error a token request ends in for this launch's simulation, if it is one the token endpoint gives. */
export function simulatedTokenError(simulate: string | null | undefined, grantType: string): (typeof SIMULATED_ERRORS)[SimulatedError] | undefined {
  if (!isSimulatedError(simulate)) return undefined;
  const e = SIMULATED_ERRORS[simulate];
  if (e.where === 'token' && grantType === 'authorization_code') return e;
  if (e.where === 'refresh' && grantType === 'refresh_token') return e;
  return undefined;
}
