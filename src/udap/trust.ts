import { compactVerify, decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';

import type { CrlCache } from '../clients/crl-cache.js';
import type { UdapCommunity } from '../config/udap-config.js';
import { checkChain, crlNextUpdate, crlUrlsOf, parseX5c, revocationOf, type ChainCertificate, type ChainProblem, type CrlFetch, type PathLink } from '../smart/udap/certificates.js';
import { UDAP_SIGNING_ALGS } from '../smart/udap/metadata.js';
import { ChainVerdicts } from './chain-verdicts.js';

/**
 * A JWT signed by a certificate of a trust community (HL7 UDAP Security IG §7.1): software statements,
 * certifications, authentication tokens. The signature is checked with the key of the first certificate of
 * `x5c`, whose chain must lead to an anchor of one of `communities` and not be revoked. With `verdicts`, a
 * chain found good lately is not validated again (chain-verdicts.ts).
 */
export type TrustedJwt =
  | { readonly ok: true; readonly community: UdapCommunity; readonly leaf: ChainCertificate; readonly claims: Record<string, unknown>; readonly header: ProtectedHeaderParameters }
  | ({ readonly ok: false } & ChainProblem);

export async function verifyCommunityJwt(jwt: string, communities: readonly UdapCommunity[], crls: CrlCache, options: { now?: Date; verdicts?: ChainVerdicts } = {}): Promise<TrustedJwt> {
  const now = options.now ?? new Date();
  const invalid = (message: string): TrustedJwt => ({ ok: false, kind: 'invalid', message });
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(jwt);
  } catch {
    return invalid('it is not a signed JWT');
  }
  const alg = header.alg ?? '';
  if (!(UDAP_SIGNING_ALGS as readonly string[]).includes(alg)) return invalid(`alg ${alg || '(none)'} is not accepted; use ${UDAP_SIGNING_ALGS.join(', ')}`);
  // A chain found good lately in one of the communities (chain-verdicts.ts): only the signature is checked.
  const { verdicts } = options;
  const key = verdicts && ChainVerdicts.keyOf(header.x5c);
  if (verdicts && key !== undefined) {
    for (const community of communities) {
      const leaf = verdicts.get(key, community.uri, now.getTime());
      if (!leaf) continue;
      const claims = await signedClaims(jwt, leaf, alg);
      return typeof claims === 'string' ? invalid(claims) : { ok: true, community, leaf, claims, header };
    }
  }
  const chain = parseX5c(header.x5c);
  if (typeof chain === 'string') return invalid(chain);
  const claims = await signedClaims(jwt, chain[0]!, alg);
  if (typeof claims === 'string') return invalid(claims);
  // The first community whose anchors the chain leads to; the most telling refusal otherwise.
  let refusal: ChainProblem | undefined;
  for (const community of communities) {
    const result = checkChain(chain, community.anchors, now);
    if (!result.ok) {
      if (result.kind !== 'untrusted' || !refusal) refusal = result;
      continue;
    }
    const urls = crlUrlsOf(result.path);
    const fetched = await crls.getAll(urls);
    const revoked = revocationOf(result.path, fetched, now);
    if (revoked) return { ok: false, ...revoked };
    if (key !== undefined) verdicts?.set(key, community.uri, result.leaf, now.getTime(), verdictEnd(result.path, urls, fetched, crls));
    return { ok: true, community, leaf: result.leaf, claims, header };
  }
  return { ok: false, ...(refusal ?? { kind: 'untrusted', message: 'no trust community is configured' }) };
}

/** The JWT's claims when its signature verifies with the certificate's key; else what is wrong. */
async function signedClaims(jwt: string, leaf: ChainCertificate, alg: string): Promise<Record<string, unknown> | string> {
  try {
    const { payload } = await compactVerify(jwt, leaf.x509.publicKey, { algorithms: [alg] });
    const parsed: unknown = JSON.parse(new TextDecoder().decode(payload));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return 'its payload is not a JSON object';
    return parsed as Record<string, unknown>;
  } catch {
    return 'its signature does not verify with the key of the first certificate in x5c';
  }
}

/**
 * How long a good verdict on `path` may be reused: until the first certificate (anchor included) expires, the
 * CRL cache would fetch a CRL again, or a CRL's nextUpdate passes; whichever comes first.
 */
function verdictEnd(path: readonly PathLink[], urls: readonly string[], fetched: ReadonlyMap<string, CrlFetch>, crls: CrlCache): number {
  const ends = path.flatMap(({ cert, issuer }) => [cert.x509.validToDate.getTime(), issuer.validToDate.getTime()]);
  for (const url of urls) ends.push(crls.freshUntil(url) ?? 0, crlNextUpdate(fetched.get(url)) ?? Number.POSITIVE_INFINITY);
  return Math.min(...ends);
}
