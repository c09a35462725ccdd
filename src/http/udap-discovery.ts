import { randomUUID } from 'node:crypto';

import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';

import type { Config } from '../config/config.js';
import { communityFor, type UdapCommunity } from '../config/udap-config.js';
import { signedMetadataClaims, UDAP_DISCOVERY_PATH, udapMetadata } from '../smart/udap/metadata.js';

/**
 * UDAP discovery (HL7 UDAP Security IG §2): `GET {baseURL}/.well-known/udap` at the issuer and under the path
 * of every FHIR base, `?community=URI` choosing whose certificate signs the metadata. A community this server
 * is not a member of: 204, no content. Served only when UDAP_CONFIG is set; otherwise 404, which the IG
 * says clients read as "no UDAP here".
 */
export async function udapDiscoveryRoutes(app: FastifyInstance, options: { readonly config: Config }): Promise<void> {
  const { config } = options;
  const udap = config.udap;
  if (!udap) return;
  const bases = new Map<string, string>([[`${config.basePath}${UDAP_DISCOVERY_PATH}`, config.issuer]]);
  for (const base of config.fhirBaseUrls) bases.set(`${new URL(base).pathname.replace(/\/$/, '')}${UDAP_DISCOVERY_PATH}`, base);

  for (const [url, baseUrl] of bases) {
    app.route<{ Querystring: { community?: string } }>({
      method: 'GET',
      url,
      schema: { querystring: { type: 'object', additionalProperties: true, properties: { community: { type: 'string', minLength: 1, maxLength: 2048 } } } },
      handler: async (request, reply) => {
        void reply.header('access-control-allow-origin', '*').header('cache-control', 'no-store');
        const community = communityFor(udap, request.query.community);
        if (!community) return reply.code(204).send();
        const document = { ...udapMetadata(config, community), signed_metadata: await signMetadata(config, community, baseUrl) };
        return reply.type('application/json; charset=utf-8').send(JSON.stringify(document));
      },
    });
  }
}

/** IG §2.3: a JWT signed with the community's certificate, which travels in `x5c` with its intermediates. */
function signMetadata(config: Config, community: UdapCommunity, baseUrl: string): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT(signedMetadataClaims(config, baseUrl, now, randomUUID()))
    .setProtectedHeader({ alg: community.signingAlg, x5c: community.chain.map((c) => c.raw.toString('base64')) })
    .sign(community.privateKey);
}
