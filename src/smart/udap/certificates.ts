import { verify as verifySignature, X509Certificate, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

import { AsnConvert } from '@peculiar/asn1-schema';
import {
  BasicConstraints,
  Certificate,
  CertificateList,
  CRLDistributionPoints,
  type Extension,
  type GeneralName,
  type GeneralSubtrees,
  id_ce_basicConstraints,
  id_ce_cRLDistributionPoints,
  id_ce_keyUsage,
  id_ce_nameConstraints,
  id_ce_subjectAltName,
  KeyUsage,
  KeyUsageFlags,
  NameConstraints,
  SubjectAlternativeName,
} from '@peculiar/asn1-x509';

/**
 * X.509 chains of UDAP (HL7 UDAP Security IG §7.1.3, UDAP Dynamic Client Registration §4): the `x5c` of a
 * software statement or an authentication token must lead to a trust anchor of the community, every
 * certificate in it valid now and not revoked by the CRLs the certificates name, and the signing
 * certificate fit for signing. Pure: the CRLs are fetched by the caller ({@link crlUrlsOf}) and handed in.
 */

export interface ChainCertificate {
  readonly x509: X509Certificate;
  /** uniformResourceIdentifier entries of the Subject Alternative Name. */
  readonly sanUris: readonly string[];
  /** Where the CRLs that cover this certificate are published (http(s) only). */
  readonly crlUrls: readonly string[];
  /** The KeyUsage bits, undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** BasicConstraints pathLenConstraint: how many intermediate CAs may follow this CA; undefined: no limit. */
  readonly pathLen?: number | undefined;
  /** dNSName entries of the Subject Alternative Name. */
  readonly sanDns?: readonly string[];
  /** Whether the Subject Alternative Name holds names of other forms (e-mail, IP address, directory name…). */
  readonly sanOther?: boolean;
  /** The NameConstraints of a CA: the subtrees names below it must be in, and those they must not be in. */
  readonly nameConstraints?: { readonly permitted: readonly NameSubtree[]; readonly excluded: readonly NameSubtree[] } | undefined;
  /** The first extension marked critical that this server does not recognise (RFC 5280 §4.2: refuse it). */
  readonly unknownCritical?: string | undefined;
}

/** A subtree of a name constraint: URIs and DNS names are checked; any other form is `other`. */
export interface NameSubtree {
  readonly form: 'uri' | 'dns' | 'other';
  readonly value: string;
}

/**
 * Extensions recognised when critical (RFC 5280 §4.2). The policy extensions are recognised without policy
 * processing: UDAP trust is the community's anchors and the SAN, not certificate policies.
 */
const RECOGNISED_CRITICAL = new Set([
  id_ce_basicConstraints, id_ce_keyUsage, id_ce_subjectAltName, id_ce_nameConstraints, id_ce_cRLDistributionPoints,
  '2.5.29.14', '2.5.29.35', '2.5.29.37', '2.5.29.32', '2.5.29.33', '2.5.29.36', '2.5.29.54', '2.5.29.18', '1.3.6.1.5.5.7.1.1',
]);

/** Why a chain was refused: no path to an anchor, a certificate revoked, or anything else wrong with it. */
export type ChainProblem = { readonly kind: 'untrusted' | 'revoked' | 'invalid'; readonly message: string };

/** One link of a validated path: a certificate and the one that issued it (the last link's issuer is the anchor). */
export interface PathLink {
  readonly cert: ChainCertificate;
  readonly issuer: X509Certificate;
}

export type ChainResult = { readonly ok: true; readonly leaf: ChainCertificate; readonly path: readonly PathLink[] } | ({ readonly ok: false } & ChainProblem);

/** A CRL as fetched: its DER bytes, or why it could not be had. */
export type CrlFetch = { readonly der: Buffer } | { readonly error: string };

/**
 * Parses an `x5c` header (RFC 7515 §4.1.6: base64 DER, the signing certificate first).
 * @returns the certificates, or a message saying what is wrong.
 */
export function parseX5c(x5c: unknown): ChainCertificate[] | string {
  if (!Array.isArray(x5c) || x5c.length === 0 || !x5c.every((c) => typeof c === 'string')) return 'the x5c header must be a non-empty array of base64 DER certificates';
  if (x5c.length > 10) return 'the x5c header holds more than 10 certificates';
  const chain: ChainCertificate[] = [];
  for (const [i, text] of x5c.entries()) {
    const parsed = parseCertificate(Buffer.from(text, 'base64'));
    if (!parsed) return `x5c[${i}] is not a DER certificate in base64`;
    chain.push(parsed);
  }
  return chain;
}

export function parseCertificate(der: Buffer): ChainCertificate | undefined {
  let x509: X509Certificate;
  let asn: Certificate;
  try {
    x509 = new X509Certificate(der);
    asn = AsnConvert.parse(der, Certificate);
  } catch {
    return undefined;
  }
  const sanUris: string[] = [];
  const sanDns: string[] = [];
  let sanOther = false;
  const crlUrls: string[] = [];
  let keyUsage: number | undefined;
  let pathLen: number | undefined;
  let nameConstraints: ChainCertificate['nameConstraints'];
  let unknownCritical: string | undefined;
  try {
    const extensions: readonly Extension[] = asn.tbsCertificate.extensions ?? [];
    for (const extension of extensions) {
      const value = extension.extnValue.buffer;
      if (extension.critical && !RECOGNISED_CRITICAL.has(extension.extnID)) unknownCritical ??= extension.extnID;
      if (extension.extnID === id_ce_subjectAltName) {
        for (const name of AsnConvert.parse(value, SubjectAlternativeName)) {
          if (name.uniformResourceIdentifier) sanUris.push(name.uniformResourceIdentifier);
          else if (name.dNSName) sanDns.push(name.dNSName);
          else sanOther = true;
        }
      } else if (extension.extnID === id_ce_basicConstraints) {
        const constraints = AsnConvert.parse(value, BasicConstraints);
        if (constraints.cA && constraints.pathLenConstraint !== undefined) pathLen = constraints.pathLenConstraint;
      } else if (extension.extnID === id_ce_nameConstraints) {
        const constraints = AsnConvert.parse(value, NameConstraints);
        nameConstraints = { permitted: subtrees(constraints.permittedSubtrees), excluded: subtrees(constraints.excludedSubtrees) };
      } else if (extension.extnID === id_ce_cRLDistributionPoints) {
        for (const point of AsnConvert.parse(value, CRLDistributionPoints)) {
          for (const name of point.distributionPoint?.fullName ?? []) {
            const uri = name.uniformResourceIdentifier;
            if (uri && /^https?:\/\//i.test(uri)) crlUrls.push(uri);
          }
        }
      } else if (extension.extnID === id_ce_keyUsage) {
        keyUsage = AsnConvert.parse(value, KeyUsage).toNumber();
      }
    }
  } catch {
    return undefined;
  }
  return { x509, sanUris, crlUrls, keyUsage, pathLen, sanDns, sanOther, nameConstraints, unknownCritical };
}

function subtrees(list: GeneralSubtrees | undefined): NameSubtree[] {
  if (!list) return [];
  return Array.from(list, ({ base }: { base: GeneralName }): NameSubtree =>
    base.uniformResourceIdentifier !== undefined ? { form: 'uri', value: base.uniformResourceIdentifier } : base.dNSName !== undefined ? { form: 'dns', value: base.dNSName } : { form: 'other', value: '' },
  );
}

/** Every CRL the certificates of a validated path name: the caller fetches these for {@link revocationOf}. */
export function crlUrlsOf(path: readonly PathLink[]): string[] {
  return [...new Set(path.flatMap((link) => link.cert.crlUrls))];
}

/**
 * Does `chain` (leaf first) lead to one of `anchors`? Checks each link's signature and issuer name, that
 * every certificate on the path is valid at `now`, that issuers are CAs, and that the leaf may sign.
 * Revocation is checked next, on the path found ({@link revocationOf}): CRLs are fetched only for chains
 * that lead to an anchor, so an untrusted certificate cannot make this server fetch the URLs it names.
 */
export function checkChain(chain: readonly ChainCertificate[], anchors: readonly X509Certificate[], now: Date): ChainResult {
  const leaf = chain[0];
  if (!leaf) return { ok: false, kind: 'invalid', message: 'the x5c header is empty' };
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KeyUsageFlags.digitalSignature) === 0) {
    return { ok: false, kind: 'invalid', message: 'the signing certificate is not for digital signatures (KeyUsage)' };
  }
  // Walk from the leaf: at each step an anchor that issued the current certificate ends the path; otherwise
  // the next certificate of x5c must have issued it.
  const path: PathLink[] = [];
  let current = leaf;
  let rest = chain.slice(1);
  for (;;) {
    const expired = validityProblem(current.x509, now);
    if (expired) return { ok: false, kind: 'invalid', message: expired };
    const anchor = anchors.find((a) => issued(a, current.x509));
    if (anchor) {
      path.push({ cert: current, issuer: anchor });
      const anchorExpired = validityProblem(anchor, now);
      if (anchorExpired) return { ok: false, kind: 'invalid', message: `the trust anchor: ${anchorExpired}` };
      break;
    }
    // An intermediate must be a CA, and allowed to sign certificates when it says what it may do.
    const next = rest.find((c) => c.x509.ca && (c.keyUsage === undefined || (c.keyUsage & KeyUsageFlags.keyCertSign) !== 0) && issued(c.x509, current.x509));
    if (!next) return { ok: false, kind: 'untrusted', message: `the certificate chain does not lead to a trust anchor of this community (no issuer found for ${name(current.x509)})` };
    path.push({ cert: current, issuer: next.x509 });
    rest = rest.filter((c) => c !== next);
    current = next;
  }
  const constrained = pathConstraintProblem(path);
  if (constrained) return { ok: false, kind: 'invalid', message: constrained };
  return { ok: true, leaf, path };
}

/**
 * What the CAs of a path (its intermediates and the anchor) allow below them (RFC 5280 §6.1): no critical
 * extension left unrecognised, no more intermediate CAs than a pathLenConstraint allows, and every URI and
 * DNS name of the certificates below within the CA's name constraints. A name constraint of another form is
 * not checked here, so a path that would need it is refused (RFC 5280 §4.2.1.10: process it or reject).
 */
function pathConstraintProblem(path: readonly PathLink[]): string | undefined {
  const anchor = path.at(-1) && parseCertificate(Buffer.from(path.at(-1)!.issuer.raw));
  if (!anchor) return 'the trust anchor cannot be read';
  // Leaf first, anchor last.
  const certs = [...path.map((link) => link.cert), anchor];
  for (const cert of certs.slice(0, -1)) if (cert.unknownCritical) return `${name(cert.x509)} has a critical extension this server does not recognise (${cert.unknownCritical})`;
  for (const [i, ca] of certs.entries()) {
    if (i === 0) continue;
    const below = certs.slice(0, i);
    // Intermediate CAs below this one, self-issued ones not counted (RFC 5280 §4.2.1.9).
    const intermediates = below.slice(1).filter((c) => c.x509.subject !== c.x509.issuer).length;
    if (ca.pathLen !== undefined && intermediates > ca.pathLen) return `${name(ca.x509)} allows ${ca.pathLen} intermediate CA(s) below it (pathLenConstraint); this path has ${intermediates}`;
    const constraints = ca.nameConstraints;
    if (!constraints) continue;
    const all = [...constraints.permitted, ...constraints.excluded];
    if (all.some((s) => s.form === 'other') && below.some((c) => c.sanOther || c.x509.subject !== '')) return `${name(ca.x509)} has name constraints of a form this server does not check (only URI and DNS names are)`;
    for (const cert of below) {
      // Self-issued intermediates are not held to name constraints; the leaf always is.
      if (cert !== certs[0] && cert.x509.subject === cert.x509.issuer) continue;
      for (const [form, names] of [['uri', cert.sanUris], ['dns', cert.sanDns ?? []]] as const) {
        const permitted = constraints.permitted.filter((s) => s.form === form);
        const excluded = constraints.excluded.filter((s) => s.form === form);
        for (const value of names) {
          const host = form === 'uri' ? uriHost(value) : value.toLowerCase();
          if (host === undefined && (permitted.length || excluded.length)) return `${value} in ${name(cert.x509)} names no host, so the name constraints of ${name(ca.x509)} cannot allow it`;
          if (host === undefined) continue;
          if (permitted.length && !permitted.some((s) => withinSubtree(host, s))) return `${value} in ${name(cert.x509)} is outside the names ${name(ca.x509)} may certify (name constraints)`;
          if (excluded.some((s) => withinSubtree(host, s))) return `${value} in ${name(cert.x509)} is among the names ${name(ca.x509)} must not certify (name constraints)`;
        }
      }
    }
  }
  return undefined;
}

/** The host of a URI, lower case; undefined without one, or when it is an IP address (RFC 5280 §4.2.1.10). */
function uriHost(uri: string): string | undefined {
  const url = URL.parse(uri);
  const host = url?.hostname.toLowerCase();
  if (!host || isIP(host.replace(/^\[|\]$/g, '')) !== 0) return undefined;
  return host;
}

/** RFC 5280 §4.2.1.10: `.example.com` is any host under it; `example.com` is that host (for DNS, and those under it). */
function withinSubtree(host: string, subtree: NameSubtree): boolean {
  const base = subtree.value.toLowerCase();
  if (base === '') return true;
  if (base.startsWith('.')) return host.endsWith(base);
  if (subtree.form === 'uri') return host === base;
  return host === base || host.endsWith(`.${base}`);
}

/**
 * Is a certificate of the path revoked by a CRL it names? A CRL that cannot be had, is not signed by the
 * certificate's issuer or is out of date fails the path too: revocation status unknown is not good.
 */
export function revocationOf(path: readonly PathLink[], crls: ReadonlyMap<string, CrlFetch>, now: Date): ChainProblem | undefined {
  for (const { cert, issuer } of path) {
    for (const url of cert.crlUrls) {
      const problem = revocationProblem(cert.x509, issuer, url, crls.get(url), now);
      if (problem) return problem;
    }
  }
  return undefined;
}

/** A CRL's nextUpdate (ms since the epoch): after it, {@link revocationOf} holds the CRL out of date. */
export function crlNextUpdate(fetched: CrlFetch | undefined): number | undefined {
  if (!fetched || 'error' in fetched) return undefined;
  try {
    return AsnConvert.parse(fetched.der, CertificateList).tbsCertList.nextUpdate?.getTime().getTime();
  } catch {
    return undefined;
  }
}

function issued(issuer: X509Certificate, subject: X509Certificate): boolean {
  try {
    return subject.checkIssued(issuer) && subject.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function validityProblem(cert: X509Certificate, now: Date): string | undefined {
  if (now < cert.validFromDate) return `${name(cert)} is not valid before ${cert.validFromDate.toISOString()}`;
  if (now > cert.validToDate) return `${name(cert)} expired at ${cert.validToDate.toISOString()}`;
  return undefined;
}

function name(cert: X509Certificate): string {
  return cert.subject.replaceAll('\n', ', ');
}

/** Signature algorithms of CRLs: OID → the hash node:crypto verifies with. */
const CRL_HASHES: Readonly<Record<string, string>> = {
  '1.2.840.113549.1.1.11': 'sha256',
  '1.2.840.113549.1.1.12': 'sha384',
  '1.2.840.113549.1.1.13': 'sha512',
  '1.2.840.10045.4.3.2': 'sha256',
  '1.2.840.10045.4.3.3': 'sha384',
  '1.2.840.10045.4.3.4': 'sha512',
};

function revocationProblem(cert: X509Certificate, issuer: X509Certificate, url: string, fetched: CrlFetch | undefined, now: Date): ChainProblem | undefined {
  const unknown = (why: string): ChainProblem => ({ kind: 'invalid', message: `the revocation status of ${name(cert)} is unknown: the CRL at ${url} ${why}` });
  if (!fetched) return unknown('was not fetched');
  if ('error' in fetched) return unknown(`could not be fetched (${fetched.error})`);
  let crl: CertificateList;
  try {
    crl = AsnConvert.parse(fetched.der, CertificateList);
  } catch {
    return unknown('is not a DER CRL');
  }
  const hash = CRL_HASHES[crl.signatureAlgorithm.algorithm];
  const tbs = firstElement(fetched.der);
  if (!hash || !tbs || !verifiesWith(hash, tbs, issuer.publicKey, Buffer.from(crl.signature))) return unknown(`is not signed by the issuer of the certificate (${name(issuer)})`);
  const nextUpdate = crl.tbsCertList.nextUpdate?.getTime();
  if (nextUpdate && nextUpdate < now) return unknown(`is out of date (next update was due ${nextUpdate.toISOString()})`);
  const serial = normalizeSerial(cert.serialNumber);
  const revoked = (crl.tbsCertList.revokedCertificates ?? []).some((r) => normalizeSerial(Buffer.from(r.userCertificate).toString('hex')) === serial);
  return revoked ? { kind: 'revoked', message: `${name(cert)} has been revoked (CRL ${url})` } : undefined;
}

function verifiesWith(hash: string, data: Buffer, key: KeyObject, signature: Buffer): boolean {
  try {
    return verifySignature(hash, data, key.asymmetricKeyType === 'ec' ? { key, dsaEncoding: 'der' } : key, signature);
  } catch {
    return false;
  }
}

function normalizeSerial(hex: string): string {
  return hex.toLowerCase().replace(/^0+/, '');
}

/** The bytes of the first element inside the outer DER SEQUENCE (a CRL's signed part, tbsCertList). */
function firstElement(der: Buffer): Buffer | undefined {
  const inner = headerLength(der, 0);
  if (!inner) return undefined;
  const element = headerLength(der, inner.header);
  if (!element) return undefined;
  const end = inner.header + element.header + element.length;
  return end <= der.length ? der.subarray(inner.header, end) : undefined;
}

/** The header size and content length of the DER element at `offset`. */
function headerLength(der: Buffer, offset: number): { header: number; length: number } | undefined {
  if (offset + 2 > der.length) return undefined;
  const first = der[offset + 1]!;
  if (first < 0x80) return { header: offset + 2 - offset, length: first };
  const bytes = first & 0x7f;
  if (bytes === 0 || bytes > 4 || offset + 2 + bytes > der.length) return undefined;
  let length = 0;
  for (let i = 0; i < bytes; i++) length = length * 256 + der[offset + 2 + i]!;
  return { header: 2 + bytes, length };
}
