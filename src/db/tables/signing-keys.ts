import type { ColumnType, Generated } from 'kysely';

export type SigningKeyState = 'next' | 'active' | 'retired';

export interface SigningKeysTable {
  kid: string;
  alg: string;
  state: SigningKeyState;
  public_jwk: ColumnType<Record<string, unknown>, string, string>;
  /** The private JWK, sealed by SecretBox (purpose `signing-key`, context the kid). */
  private_jwk: string;
  created_at: Generated<Date>;
  activated_at: Date | null;
  retired_at: Date | null;
  /** Retired keys stay in the JWKS until then, so tokens they signed can still be verified. */
  publish_until: Date | null;
}
