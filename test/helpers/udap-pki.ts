import 'reflect-metadata';

import { KeyObject, randomBytes, randomUUID, type webcrypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import * as x509 from '@peculiar/x509';
import { SignJWT } from 'jose';

/**
 * A UDAP trust community for tests, built with @peculiar/x509: a root CA, an intermediate CA, this server's
 * certificate, and client certificates with SAN URIs (one revoked, one expired), plus an untrusted root with
 * a client of its own. The CAs' CRLs are served on loopback at the URLs the certificates name.
 */
const RSA = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const DAY = 86_400_000;

export interface Party {
  readonly cert: x509.X509Certificate;
  readonly privateKey: KeyObject;
  /** x5c: this certificate, then the intermediates (not the root). */
  readonly x5c: string[];
  readonly san: string;
}

interface Ca {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly crlUrl: string;
  readonly revoked: string[];
}

export class TestPki {
  readonly dir: string;
  readonly community = 'urn:oid:2.16.840.1.113883.3.7204.1.5';
  root!: Ca;
  intermediate!: Ca;
  rogueRoot!: Ca;
  server!: Party;
  /** How many times each CRL was fetched. */
  readonly crlFetches = new Map<string, number>();
  /** Served with `Cache-Control: max-age` of this many seconds; undefined: `no-store`. */
  crlMaxAge: number | undefined;
  #http!: Server;
  #base!: string;
  #serial = 10;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** `serverSans`: the URIs the server's certificate names (the issuer and each FHIR base). */
  static async create(serverSans: readonly string[]): Promise<TestPki> {
    const pki = new TestPki(await mkdtemp(join(tmpdir(), 'udap-pki-')));
    await pki.#listen();
    pki.root = await pki.#ca('CN=Test UDAP Root', undefined, 'root');
    pki.intermediate = await pki.#ca('CN=Test UDAP Intermediate', pki.root, 'intermediate');
    pki.rogueRoot = await pki.#ca('CN=Untrusted Root', undefined, 'rogue');
    pki.server = await pki.issue(serverSans);
    await writeFile(join(pki.dir, 'anchor.pem'), pki.root.cert.toString('pem'));
    await writeFile(join(pki.dir, 'server.pem'), [pki.server.cert, pki.intermediate.cert].map((c) => c.toString('pem')).join('\n'));
    await writeFile(join(pki.dir, 'server.key'), pki.server.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    return pki;
  }

  /** Writes a UDAP_CONFIG file for this community (extra settings merged in) and returns its path. */
  async configFile(extra: Record<string, unknown> = {}): Promise<string> {
    const path = join(this.dir, `udap-${randomUUID()}.json`);
    await writeFile(path, JSON.stringify({ communities: [{ uri: this.community, trustAnchors: ['anchor.pem'], certificate: 'server.pem', privateKey: 'server.key', ...extra }] }));
    return path;
  }

  /** Writes `party`'s chain and key as a server's files (for another server of the community): their names, for configFile. */
  async serverFiles(party: Party, name: string): Promise<{ certificate: string; privateKey: string }> {
    const chain = party.cert.issuer === this.intermediate.cert.subject ? [party.cert, this.intermediate.cert] : [party.cert];
    await writeFile(join(this.dir, `${name}.pem`), chain.map((c) => c.toString('pem')).join('\n'));
    await writeFile(join(this.dir, `${name}.key`), party.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    return { certificate: `${name}.pem`, privateKey: `${name}.key` };
  }

  /** A leaf certificate under the intermediate (or `ca`), naming `sans` as SAN URIs. */
  async issue(sans: readonly string[], options: { ca?: Ca; notBefore?: Date; notAfter?: Date; keyUsage?: x509.KeyUsageFlags } = {}): Promise<Party> {
    const ca = options.ca ?? this.intermediate;
    const keys = await crypto.subtle.generateKey(RSA, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: this.#nextSerial(),
      subject: `CN=${sans[0] ?? 'party'}`,
      issuer: ca.cert.subject,
      notBefore: options.notBefore ?? new Date(Date.now() - DAY),
      notAfter: options.notAfter ?? new Date(Date.now() + 365 * DAY),
      signingAlgorithm: RSA,
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(options.keyUsage ?? x509.KeyUsageFlags.digitalSignature, true),
        new x509.SubjectAlternativeNameExtension(sans.map((value) => ({ type: 'url' as const, value }))),
        new x509.CRLDistributionPointsExtension([ca.crlUrl]),
      ],
    });
    const chain = ca === this.intermediate ? [cert, this.intermediate.cert] : [cert];
    return { cert, privateKey: KeyObject.from(keys.privateKey), x5c: chain.map((c) => Buffer.from(c.rawData).toString('base64')), san: sans[0] ?? '' };
  }

  /** Puts the certificate on its CA's CRL. */
  revoke(party: Party): void {
    const ca = [this.intermediate, this.root, this.rogueRoot].find((c) => c.cert.subject === party.cert.issuer)!;
    ca.revoked.push(party.cert.serialNumber);
  }

  /** A software statement (UDAP DCR §2) signed by `party`; `claims` override the defaults. */
  async softwareStatement(party: Party, registrationUrl: string, claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: party.san,
      sub: party.san,
      aud: registrationUrl,
      iat: now,
      exp: now + 300,
      jti: randomUUID(),
      client_name: 'Acme B2B App',
      contacts: ['mailto:ops@acme.example'],
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'private_key_jwt',
      scope: 'system/Patient.rs',
      ...claims,
    })
      .setProtectedHeader({ alg: 'RS256', x5c: party.x5c, ...header })
      .sign(party.privateKey);
  }

  /** A certification (UDAP Certifications and Endorsements) about `subject`, signed by `certifier`. */
  async certification(certifier: Party, subject: Party, uris: readonly string[], claims: Record<string, unknown> = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: certifier.san, sub: subject.san, iat: now, exp: now + 86_400, jti: randomUUID(), certification_name: 'Test certification', certification_uris: [...uris], ...claims })
      .setProtectedHeader({ alg: 'RS256', x5c: certifier.x5c })
      .sign(certifier.privateKey);
  }

  /** A UDAP authentication token (IG §5.2.1) for `clientId`, signed by `party` with its x5c. */
  async authenticationToken(party: Party, clientId: string, tokenUrl: string, claims: Record<string, unknown> = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: clientId, sub: clientId, aud: tokenUrl, iat: now, exp: now + 300, jti: randomUUID(), ...claims })
      .setProtectedHeader({ alg: 'RS256', x5c: party.x5c, typ: 'JWT' })
      .sign(party.privateKey);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.#http.close(() => resolve()));
    await rm(this.dir, { recursive: true, force: true });
  }

  async #ca(subject: string, parent: Ca | undefined, name: string): Promise<Ca> {
    const keys = await crypto.subtle.generateKey(RSA, true, ['sign', 'verify']);
    const extensions = [new x509.BasicConstraintsExtension(true, parent ? 0 : 1, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true)];
    const notBefore = new Date(Date.now() - DAY);
    const notAfter = new Date(Date.now() + 3650 * DAY);
    const cert = parent
      ? await x509.X509CertificateGenerator.create({
          serialNumber: this.#nextSerial(),
          subject,
          issuer: parent.cert.subject,
          notBefore,
          notAfter,
          signingAlgorithm: RSA,
          publicKey: keys.publicKey,
          signingKey: parent.keys.privateKey,
          extensions: [...extensions, new x509.CRLDistributionPointsExtension([parent.crlUrl])],
        })
      : await x509.X509CertificateGenerator.createSelfSigned({ serialNumber: this.#nextSerial(), name: subject, notBefore, notAfter, signingAlgorithm: RSA, keys, extensions });
    return { cert, keys, crlUrl: `${this.#base}/crl/${name}.crl`, revoked: [] };
  }

  #nextSerial(): string {
    this.#serial += 1;
    return `${randomBytes(4).toString('hex')}${this.#serial.toString(16).padStart(4, '0')}`.replace(/^0+/, '1');
  }

  async #listen(): Promise<void> {
    this.#http = createServer((req, res) => {
      void (async () => {
        const ca = [this.root, this.intermediate, this.rogueRoot].find((c) => c.crlUrl.endsWith(req.url ?? ''));
        if (!ca) {
          res.writeHead(404).end();
          return;
        }
        this.crlFetches.set(req.url!, (this.crlFetches.get(req.url!) ?? 0) + 1);
        const crl = await x509.X509CrlGenerator.create({
          issuer: ca.cert.subject,
          thisUpdate: new Date(Date.now() - 60_000),
          nextUpdate: new Date(Date.now() + DAY),
          entries: ca.revoked.map((serialNumber) => ({ serialNumber, revocationDate: new Date() })),
          signingAlgorithm: RSA,
          signingKey: ca.keys.privateKey,
        });
        // Not cached unless asked: a test that revokes a certificate sees the new list at once.
        res.writeHead(200, { 'content-type': 'application/pkix-crl', 'cache-control': this.crlMaxAge === undefined ? 'no-store' : `max-age=${this.crlMaxAge}` }).end(Buffer.from(crl.rawData));
      })();
    });
    await new Promise<void>((resolve) => this.#http.listen(0, '127.0.0.1', resolve));
    this.#base = `http://127.0.0.1:${(this.#http.address() as AddressInfo).port}`;
  }
}
