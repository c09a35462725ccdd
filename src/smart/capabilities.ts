/**
 * SMART capabilities this server advertises (SMART App Launch 2.2 §Capabilities), each with the test file
 * that proves it works. The discovery document lists exactly these; test/discovery.test.ts fails when one
 * is listed without a test in the named file whose title starts `capability: ` and names it. Add a
 * capability here only together with the flow that makes it true.
 */
export const CAPABILITIES: readonly { readonly name: SmartCapability; readonly provenBy: string }[] = [
  { name: 'launch-ehr', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'launch-standalone', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'authorize-post', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'client-public', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'client-confidential-symmetric', provenBy: 'test/client-auth.test.ts' },
  { name: 'client-confidential-asymmetric', provenBy: 'test/client-auth.test.ts' },
  { name: 'sso-openid-connect', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'context-banner', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'context-style', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'context-ehr-patient', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'context-ehr-encounter', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'context-standalone-patient', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'context-standalone-encounter', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'permission-offline', provenBy: 'test/refresh.test.ts' },
  { name: 'permission-online', provenBy: 'test/refresh.test.ts' },
  { name: 'permission-patient', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'permission-user', provenBy: 'test/launch-ehr.test.ts' },
  { name: 'permission-v1', provenBy: 'test/launch-standalone.test.ts' },
  { name: 'permission-v2', provenBy: 'test/launch-standalone.test.ts' },
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
