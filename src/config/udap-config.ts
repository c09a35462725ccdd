import { createPrivateKey, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

import { Ajv, type ErrorObject } from 'ajv';

/**
 * UDAP trust communities (HL7 UDAP Security IG / FAST Security), read from the JSON file UDAP_CONFIG names.
 * Each community has its trust anchors, this server's certificate chain and private key for it, and its
 * policy. Every file is read and checked at start-up: a bad one stops the server with a message naming it.
 */
export interface UdapCommunity {
  /** The community's URI, e.g. urn:oid:2.16.840.1.113883.3.7204.1.5 (TEFCA). */
  readonly uri: string;
  /** The community whose certificate signs metadata requested without `community`. */
  readonly isDefault: boolean;
  /** The certificates a client's chain must lead to. */
  readonly anchors: readonly X509Certificate[];
  /** This server's certificate first, then the intermediates up to (not including) the anchor. */
  readonly chain: readonly X509Certificate[];
  readonly privateKey: KeyObject;
  /** RS256 for an RSA key (UDAP's required algorithm), ES256 or ES384 for an EC key by its curve. */
  readonly signingAlg: 'RS256' | 'ES256' | 'ES384';
  /** The scopes a client whose certificate chains to an anchor may register for without an operator. */
  readonly allowedScope: string;
  readonly certificationsSupported: readonly string[];
  readonly certificationsRequired: readonly string[];
  /** The purpose_of_use codes hl7-b2b may carry; undefined: any. */
  readonly purposesOfUse: readonly string[] | undefined;
  /** hl7-b2b must name one of these in consent_policy; undefined: none required. */
  readonly consentPolicies: readonly string[] | undefined;
  /**
   * The TEFCA profile (Facilitated FHIR): the Basic App Certification with one exchange purpose is required,
   * one client per exchange purpose, and hl7-b2b carries exactly that one purpose_of_use.
   */
  readonly tefca: boolean;
  /**
   * TEFCA Individual Access Services: the credential service providers whose id_tokens `tefca_ias` may carry
   * (each an OpenID provider: its `iss`, and where its signing keys are published). Empty: no IAS request
   * can succeed.
   */
  readonly credentialServiceProviders: readonly CredentialServiceProvider[];
  /** UDAP Tiered OAuth (IG §6) in this community; undefined: off (the `idp` parameter is ignored, `udap_to` not advertised). */
  readonly tieredOAuth: TieredOAuthPolicy | undefined;
}

/**
 * Tiered OAuth: which IdPs of the community may sign people in here, and what happens to a person whose (iss,
 * sub) is linked to no local user yet: `operator` — nothing until an operator links them (admin API);
 * `create` — a local user is created on first use, whose fhirUser is `<createAs>/<its id>`.
 */
export interface TieredOAuthPolicy {
  /** The IdP base URLs allowed; undefined: any whose metadata is signed by a certificate of the community. */
  readonly idps: readonly string[] | undefined;
  readonly link: 'operator' | 'create';
  readonly createAs: 'Person' | 'RelatedPerson' | 'Practitioner';
  /** This server's registration at IdPs (IG §3.1): a mailto: contact, an https logo, and a name (default: the issuer's host). */
  readonly contact: string;
  readonly logoUri: string;
  readonly clientName: string | undefined;
}

export interface CredentialServiceProvider {
  /** The `iss` of its id_tokens, compared exactly. */
  readonly issuer: string;
  /** Its JWKS, fetched through the SSRF-safe client (https unless OUTBOUND_ALLOW_PRIVATE). */
  readonly jwksUri: string;
}

/** The certification TEFCA requires of every registration (RCE's UDAP profile), with its `exchange_purposes`. */
export const TEFCA_BASIC_APP_CERTIFICATION = 'https://rce.sequoiaproject.org/udap/profiles/basic-app-certification';

export interface UdapConfig {
  readonly communities: readonly UdapCommunity[];
}

/** By default a trusted client may read and search, on its own behalf, a user's or a patient's. */
export const DEFAULT_ALLOWED_SCOPE = 'system/*.rs user/*.rs patient/*.rs';

const URI = '^[A-Za-z][A-Za-z0-9+.-]*:\\S+$';
const HTTP_URL = '^https?://[^\\s/?#]+(/\\S*)?$';
const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['communities'],
  properties: {
    communities: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['uri', 'trustAnchors', 'certificate', 'privateKey'],
        properties: {
          uri: { type: 'string', pattern: URI },
          default: { type: 'boolean' },
          trustAnchors: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          certificate: { type: 'string', minLength: 1 },
          privateKey: { type: 'string', minLength: 1 },
          allowedScope: { type: 'string', minLength: 1 },
          certificationsSupported: { type: 'array', items: { type: 'string', pattern: URI } },
          certificationsRequired: { type: 'array', items: { type: 'string', pattern: URI } },
          purposesOfUse: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          consentPolicies: { type: 'array', minItems: 1, items: { type: 'string', pattern: URI } },
          tefca: { type: 'boolean' },
          credentialServiceProviders: {
            type: 'array',
            items: {
              type: 'object',
              additionalProperties: false,
              required: ['issuer', 'jwksUri'],
              properties: { issuer: { type: 'string', pattern: HTTP_URL }, jwksUri: { type: 'string', pattern: HTTP_URL } },
            },
          },
          tieredOAuth: {
            type: 'object',
            additionalProperties: false,
            required: ['enabled'],
            properties: {
              enabled: { type: 'boolean' },
              idps: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^https?://[^\\s?#]+$' } },
              link: { enum: ['operator', 'create'] },
              createAs: { enum: ['Person', 'RelatedPerson', 'Practitioner'] },
              contact: { type: 'string', pattern: '^mailto:[^@\\s]+@[^@\\s]+$' },
              logoUri: { type: 'string', pattern: '^https://\\S+$' },
              clientName: { type: 'string', minLength: 1, maxLength: 200 },
            },
          },
        },
      },
    },
  },
} as const;

interface CommunityJson {
  uri: string;
  default?: boolean;
  trustAnchors: string[];
  certificate: string;
  privateKey: string;
  allowedScope?: string;
  certificationsSupported?: string[];
  certificationsRequired?: string[];
  purposesOfUse?: string[];
  consentPolicies?: string[];
  tefca?: boolean;
  credentialServiceProviders?: { issuer: string; jwksUri: string }[];
  tieredOAuth?: { enabled: boolean; idps?: string[]; link?: TieredOAuthPolicy['link']; createAs?: TieredOAuthPolicy['createAs']; contact?: string; logoUri?: string; clientName?: string };
}

const validate = new Ajv({ allErrors: true, strict: true }).compile<{ communities: CommunityJson[] }>(schema);

/**
 * Reads the file at `path` (paths inside it are relative to it). Problems are pushed onto `problems`, each
 * starting with `UDAP_CONFIG`; undefined when there are any.
 */
export function loadUdapConfig(path: string, problems: string[]): UdapConfig | undefined {
  const at = (where: string, what: string) => problems.push(`UDAP_CONFIG (${path})${where ? ` ${where}` : ''}: ${what}`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    at('', error instanceof SyntaxError ? `is not JSON: ${error.message}` : `cannot be read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
    return undefined;
  }
  if (!validate(json)) {
    for (const error of validate.errors ?? []) at(pointer(error), describe(error));
    return undefined;
  }
  const before = problems.length;
  const dir = dirname(resolve(path));
  const communities = json.communities.map((c, i) => community(c, `communities[${i}]`, dir, at));
  const uris = json.communities.map((c) => c.uri);
  if (new Set(uris).size !== uris.length) at('communities', 'each uri must appear once');
  const defaults = json.communities.filter((c) => c.default === true).length;
  if (defaults > 1) at('communities', 'at most one community may be the default');
  if (problems.length > before) return undefined;
  const list = communities as UdapCommunity[];
  // Without an explicit default, the first community signs metadata requested without `community`.
  return { communities: defaults ? list : list.map((c, i) => ({ ...c, isDefault: i === 0 })) };
}

function community(c: CommunityJson, where: string, dir: string, at: (where: string, what: string) => void): UdapCommunity | undefined {
  const read = (file: string, field: string): string | undefined => {
    try {
      return readFileSync(resolve(dir, file), 'utf8');
    } catch (error) {
      at(`${where}.${field}`, `${file} cannot be read: ${(error as NodeJS.ErrnoException).code ?? String(error)}`);
      return undefined;
    }
  };
  const certificates = (file: string, field: string): X509Certificate[] => {
    const text = read(file, field);
    if (text === undefined) return [];
    const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (!blocks.length) at(`${where}.${field}`, `${file} holds no PEM certificate`);
    const parsed: X509Certificate[] = [];
    for (const block of blocks) {
      try {
        parsed.push(new X509Certificate(block));
      } catch {
        at(`${where}.${field}`, `${file} holds a certificate that cannot be parsed`);
      }
    }
    return parsed;
  };

  const anchors = c.trustAnchors.flatMap((file, i) => certificates(file, `trustAnchors[${i}]`));
  for (const anchor of anchors) if (!anchor.ca) at(`${where}.trustAnchors`, `${anchor.subject.replaceAll('\n', ', ')} is not a CA certificate`);
  const chain = certificates(c.certificate, 'certificate');
  const keyText = read(c.privateKey, 'privateKey');
  let privateKey: KeyObject | undefined;
  if (keyText !== undefined) {
    try {
      privateKey = createPrivateKey(keyText);
    } catch {
      at(`${where}.privateKey`, `${c.privateKey} holds no PEM private key that can be read (unencrypted PKCS#8, PKCS#1 or SEC1)`);
    }
  }
  const leaf = chain[0];
  let signingAlg: UdapCommunity['signingAlg'] | undefined;
  if (leaf && privateKey) {
    const publicOfKey = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    if (!leaf.publicKey.export({ format: 'der', type: 'spki' }).equals(publicOfKey)) {
      at(`${where}.privateKey`, `${c.privateKey} is not the key of the first certificate in ${c.certificate}`);
    }
    signingAlg = algFor(privateKey);
    if (!signingAlg) at(`${where}.privateKey`, 'must be an RSA key, or an EC key on P-256 or P-384');
    if (!leaf.subjectAltName?.split(', ').some((n) => n.startsWith('URI:'))) at(`${where}.certificate`, 'the first certificate must name this server by a URI in its Subject Alternative Name');
  }
  if (!privateKey || !leaf || !signingAlg || !anchors.length) return undefined;
  const tefca = c.tefca === true;
  const withTefca = (list: readonly string[]) => (tefca ? [...new Set([...list, TEFCA_BASIC_APP_CERTIFICATION])] : [...list]);
  const supported = withTefca(c.certificationsSupported ?? []);
  const required = withTefca(c.certificationsRequired ?? []);
  for (const uri of required) if (!supported.includes(uri)) at(`${where}.certificationsRequired`, `${uri} must also be in certificationsSupported`);
  const providers = c.credentialServiceProviders ?? [];
  if (providers.length && !tefca) at(`${where}.credentialServiceProviders`, 'is for TEFCA Individual Access Services: set tefca to true as well');
  const issuers = providers.map((p) => p.issuer);
  if (new Set(issuers).size !== issuers.length) at(`${where}.credentialServiceProviders`, 'each issuer must appear once');
  const tiered = c.tieredOAuth;
  if (tiered?.createAs && tiered.link !== 'create') at(`${where}.tieredOAuth.createAs`, 'applies only with "link": "create"');
  // IG §3.1: the registration this server makes at an IdP needs a contact and, for authorization_code, a logo.
  if (tiered?.enabled && !tiered.contact) at(`${where}.tieredOAuth.contact`, 'is required when enabled: a mailto: address for the registrations this server makes at identity providers');
  if (tiered?.enabled && !tiered.logoUri) at(`${where}.tieredOAuth.logoUri`, 'is required when enabled: an https URL of a logo for the registrations this server makes at identity providers');
  return {
    uri: c.uri,
    isDefault: c.default === true,
    anchors,
    chain,
    privateKey,
    signingAlg,
    allowedScope: c.allowedScope ?? DEFAULT_ALLOWED_SCOPE,
    certificationsSupported: supported,
    certificationsRequired: required,
    purposesOfUse: c.purposesOfUse,
    consentPolicies: c.consentPolicies,
    tefca,
    credentialServiceProviders: providers.map(({ issuer, jwksUri }) => ({ issuer, jwksUri })),
    tieredOAuth: tiered?.enabled && tiered.contact && tiered.logoUri ? { idps: tiered.idps, link: tiered.link ?? 'operator', createAs: tiered.createAs ?? 'Person', contact: tiered.contact, logoUri: tiered.logoUri, clientName: tiered.clientName } : undefined,
  };
}

function algFor(key: KeyObject): UdapCommunity['signingAlg'] | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType !== 'ec') return undefined;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (curve === 'prime256v1') return 'ES256';
  if (curve === 'secp384r1') return 'ES384';
  return undefined;
}

function pointer(error: ErrorObject): string {
  const path = error.instancePath.replace(/\/(\d+)/g, '[$1]').replace(/\//g, '.').replace(/^\./, '');
  if (error.keyword === 'required') return path ? `${path}.${String(error.params.missingProperty)}` : String(error.params.missingProperty);
  if (error.keyword === 'additionalProperties') return path ? `${path}.${String(error.params.additionalProperty)}` : String(error.params.additionalProperty);
  return path || '(top level)';
}

function describe(error: ErrorObject): string {
  switch (error.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      if (error.instancePath === '') return 'is not a known setting (communities)';
      if (/\/credentialServiceProviders\/\d+$/.test(error.instancePath)) return 'is not a known setting (issuer, jwksUri)';
      if (error.instancePath.endsWith('/tieredOAuth')) return 'is not a known setting (enabled, idps, link, createAs, contact, logoUri, clientName)';
      return 'is not a known setting (uri, default, trustAnchors, certificate, privateKey, allowedScope, certificationsSupported, certificationsRequired, purposesOfUse, consentPolicies, tefca, credentialServiceProviders, tieredOAuth)';
    case 'pattern':
      if (error.instancePath.includes('/tieredOAuth/idps/')) return 'must be an IdP base URL (http or https, no query or fragment)';
      if (error.instancePath.endsWith('/tieredOAuth/contact')) return 'must be a mailto: address';
      if (error.instancePath.endsWith('/tieredOAuth/logoUri')) return 'must be an https URL';
      return error.params.pattern === HTTP_URL ? 'must be an http(s) URL' : 'must be a URI';
    case 'enum':
      return `must be one of ${(error.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    default:
      return error.message ?? 'is not valid';
  }
}

/** The community for a discovery request: the one named, or the default; undefined when the named one is unknown. */
export function communityFor(config: UdapConfig, uri: string | undefined): UdapCommunity | undefined {
  if (uri === undefined) return config.communities.find((c) => c.isDefault) ?? config.communities[0];
  return config.communities.find((c) => c.uri === uri);
}
