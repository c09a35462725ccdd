/** One throttled key: of the sign-in page, or of dynamic registration (src/users/login-throttle.ts). */
export interface LoginThrottleTable {
  kind: 'account' | 'device' | 'source' | 'registration';
  /** SecretBox MAC of the user name, device or source: never the value itself. */
  key_hash: string;
  /** Attempts let through since the key was last reset or forgotten. */
  hits: number;
  /** When the next attempt is due (less the policy's tolerance). */
  next_at: Date;
  /** When the row may be forgotten: an attempt after this starts afresh, and housekeeping deletes it. */
  expires_at: Date;
  /** Whether the latest attempt was let through: what the counting statement answers. */
  last_admitted: boolean;
}
