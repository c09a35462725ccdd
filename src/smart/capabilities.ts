/**
 * SMART capabilities this server advertises (SMART App Launch 2.2 §Capabilities), each with the test file
 * that proves it works. The discovery document lists exactly these; test/smart-configuration.test.ts fails
 * when one is listed without a test titled `capability: <name>` in the named file. Add a capability here
 * only together with the flow that makes it true.
 */
export const CAPABILITIES: readonly { readonly name: SmartCapability; readonly provenBy: string }[] = [
  { name: 'client-confidential-symmetric', provenBy: 'test/client-auth.test.ts' },
  { name: 'client-confidential-asymmetric', provenBy: 'test/client-auth.test.ts' },
];

export type SmartCapability =
  | 'launch-ehr'
  | 'launch-standalone'
  | 'authorize-post'
  | 'client-public'
  | 'client-confidential-symmetric'
  | 'client-confidential-asymmetric'
  | 'sso-openid-connect'
  | 'context-banner'
  | 'context-style'
  | 'context-ehr-patient'
  | 'context-ehr-encounter'
  | 'context-standalone-patient'
  | 'context-standalone-encounter'
  | 'permission-offline'
  | 'permission-online'
  | 'permission-patient'
  | 'permission-user'
  | 'permission-v1'
  | 'permission-v2';
