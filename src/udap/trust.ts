import { compactVerify, decodeProtectedHeader, type ProtectedHeaderParameters } from 'jose';

import type { CrlCache } from '../clients/crl-cache.js';
import type { UdapCommunity } from '../config/udap-config.js';
import { checkChain, crlUrlsOf, parseX5c, revocationOf, type ChainCertificate, type ChainProblem } from '../smart/udap/certificates.js';
import { UDAP_SIGNING_ALGS } from '../smart/udap/metadata.js';

/**
 * A JWT signed by a certificate of a trust community (HL7 UDAP Security IG §7.1): software statements,
 * certifications, authentication tokens. The signature is checked with the key of the first certificate of
 * `x5c`, whose chain must lead to an anchor of one of `communities` and not be revoked.
 */
export type TrustedJwt =
  | { readonly ok: true; readonly community: UdapCommunity; readonly leaf: ChainCertificate; readonly claims: Record<string, unknown>; readonly header: ProtectedHeaderParameters }
  | ({ readonly ok: false } & ChainProblem);

export async function verifyCommunityJwt(jwt: string, communities: readonly UdapCommunity[], crls: CrlCache, now = new Date()): Promise<TrustedJwt> {
  const invalid = (message: string): TrustedJwt => ({ ok: false, kind: 'invalid', message });
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(jwt);
  } catch {
    return invalid('it is not a signed JWT');
  }
  const alg = header.alg ?? '';
  if (!(UDAP_SIGNING_ALGS as readonly string[]).includes(alg)) return invalid(`alg ${alg || '(none)'} is not accepted; use ${UDAP_SIGNING_ALGS.join(', ')}`);
  const chain = parseX5c(header.x5c);
  if (typeof chain === 'string') return invalid(chain);
  let claims: Record<string, unknown>;
  try {
    const { payload } = await compactVerify(jwt, chain[0]!.x509.publicKey, { algorithms: [alg] });
    const parsed: unknown = JSON.parse(new TextDecoder().decode(payload));
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return invalid('its payload is not a JSON object');
    claims = parsed as Record<string, unknown>;
  } catch {
    return invalid('its signature does not verify with the key of the first certificate in x5c');
  }
  // The first community whose anchors the chain leads to; the most telling refusal otherwise.
  let refusal: ChainProblem | undefined;
  for (const community of communities) {
    const result = checkChain(chain, community.anchors, now);
    if (!result.ok) {
      if (result.kind !== 'untrusted' || !refusal) refusal = result;
      continue;
    }
    const revoked = revocationOf(result.path, await crls.getAll(crlUrlsOf(result.path)), now);
    if (revoked) return { ok: false, ...revoked };
    return { ok: true, community, leaf: result.leaf, claims, header };
  }
  return { ok: false, ...(refusal ?? { kind: 'untrusted', message: 'no trust community is configured' }) };
}
