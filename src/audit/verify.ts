import { sql, type Kysely } from 'kysely';

import type { DB } from '../db/schema.js';
import type { SecretBox } from '../security/secret-box.js';
import { GENESIS_HASH, isKeyedHash, rowHashProblem } from './audit.js';
import { CheckpointError, CheckpointVerifier, storedCheckpoints, type ChainHead } from './checkpoints.js';

export interface VerifyOptions {
  readonly pageSize?: number;
  /** Exported checkpoints to hold the trail to, besides those stored in the database. */
  readonly checkpoints?: readonly { readonly source: string; readonly jws: string }[];
  /**
   * Take chains with plain sha256 hashes begun after keyed rows: only after going back to a release from before
   * keyed chains, whose processes write them. Otherwise such a chain is refused (see {@link verifyAudit}).
   */
  readonly allowUnkeyedChains?: boolean;
}

export interface CheckedCheckpoint {
  readonly issuedAt: Date;
  readonly total: number;
  readonly chains: number;
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly checked: number;
  readonly chains: number;
  /** The checkpoints held the trail to; when ok, every one of them is ours and matched. */
  readonly checkpoints: { readonly stored: number; readonly newestStored?: CheckedCheckpoint; readonly given: readonly CheckedCheckpoint[] };
  /** The first row whose hash does not match its content, its predecessor or an anchor. */
  readonly brokenAt?: { readonly seq: string; readonly reason: string };
  /** The first checkpoint that is not ours, or that the trail no longer matches: `stored checkpoint <id>` or the given source. */
  readonly refused?: { readonly checkpoint: string; readonly reason: string };
}

/** A chain head named by checkpoints: every checkpoint taken while the chain was idle names the same one. */
interface Claim {
  readonly chain: string;
  readonly seq: string;
  readonly hash: string;
  count: number;
  /** The first checkpoint that names it, to name in a refusal. */
  readonly source: string;
}

/**
 * Verifies the audit trail: walks every chain in order, in pages, recomputing each hash (the first row of a
 * chain must be anchored to the genesis hash or to a hash written before it), and holds it to every signed
 * checkpoint, stored or given: each chain head a checkpoint names must still be there, with the same hash
 * and at least as many rows of its chain up to it. So rows removed from the end of a chain, or a whole
 * chain, after a checkpoint are found.
 *
 * Rows written before the chain was keyed carry a plain sha256 that anyone can recompute: they verify as
 * they are, but once a chain has a keyed row, an unkeyed one after it means a rewrite. And a chain begun after
 * the trail's first keyed row must be keyed too: every process of a release that keys its rows writes a keyed
 * chain, and a process of an earlier release still running through a rolling upgrade goes on with the chain it
 * began before. An unkeyed chain begun later is a whole chain written without SECRET_KEY (unless the deployment
 * went back to a release from before keyed chains: `allowUnkeyedChains`).
 */
export async function verifyAudit(db: Kysely<DB>, box: SecretBox, options: VerifyOptions = {}): Promise<VerifyResult> {
  const pageSize = options.pageSize ?? 1000;
  const verifier = new CheckpointVerifier(db, box);
  const claims = new Map<string, Claim[]>();
  let refused: VerifyResult['refused'];
  const refuse = (checkpoint: string, reason: string): void => {
    refused ??= { checkpoint, reason };
  };
  const accept = async (source: string, jws: string): Promise<CheckedCheckpoint | undefined> => {
    try {
      const { claims: content } = await verifier.verify(jws);
      for (const head of content.chains) addClaim(claims, head, source);
      return { issuedAt: new Date(content.iat * 1000), total: content.total, chains: content.chains.length };
    } catch (error) {
      if (!(error instanceof CheckpointError)) throw error;
      refuse(source, `it is refused: ${error.message}`);
      return undefined;
    }
  };
  let stored = 0;
  let newestStored: CheckedCheckpoint | undefined;
  for await (const { id, jws } of storedCheckpoints(db)) {
    const checked = await accept(`stored checkpoint ${id}`, jws);
    if (checked) stored++;
    if (checked && (!newestStored || checked.issuedAt >= newestStored.issuedAt)) newestStored = checked;
  }
  const given: CheckedCheckpoint[] = [];
  for (const { source, jws } of options.checkpoints ?? []) {
    const checked = await accept(source, jws);
    if (checked) given.push(checked);
  }
  const checkpoints = { stored, ...(newestStored ? { newestStored } : {}), given };

  const chains = new Map<string, { last: string; count: number; keyed: boolean }>();
  // The hash each chain starts from, other than the genesis hash: the last row of the trail when its process
  // started. An anchor always comes before its chain's first row, so the walk meets it first and no index on
  // hash is needed. A chain that starts while we walk is anchored by a lookup (a scan, and a rare one).
  const { rows: starts } = await sql<{ prev_hash: string }>`
    select e.prev_hash from audit_events e join (select min(seq) as seq from audit_events group by chain) f on f.seq = e.seq`.execute(db);
  const anchors = new Set(starts.map((r) => r.prev_hash).filter((hash) => hash !== GENESIS_HASH));
  const anchorsMet = new Set<string>();
  let after = '0';
  let checked = 0;
  let keyedMet = false;
  const broken = (seq: string, reason: string): VerifyResult => ({ ok: false, checked, chains: chains.size, checkpoints, brokenAt: { seq, reason }, ...(refused ? { refused } : {}) });
  for (;;) {
    const rows = await db.selectFrom('audit_events').selectAll().where(sql<string>`seq`, '>', after).orderBy('seq').limit(pageSize).execute();
    for (const row of rows) {
      const seq = String(row.seq);
      const chain = chains.get(row.chain);
      if (!chain) {
        const anchored =
          row.prev_hash === GENESIS_HASH ||
          (anchors.has(row.prev_hash) ? anchorsMet.has(row.prev_hash) : await db.selectFrom('audit_events').select('seq').where('hash', '=', row.prev_hash).where(sql<string>`seq`, '<', seq).executeTakeFirst());
        if (!anchored) return broken(seq, 'the chain starts from a hash that is not in the trail (rows before it were removed)');
      } else if (row.prev_hash !== chain.last) {
        return broken(seq, 'prev_hash is not the hash of the row before in its chain (a row was removed or inserted)');
      }
      const keyed = isKeyedHash(row.hash);
      if (!chain && keyedMet && !keyed && !options.allowUnkeyedChains) {
        return broken(seq, 'the chain has plain sha256 hashes and begins after keyed rows (it was written without SECRET_KEY; if the deployment went back to a release from before keyed chains, verify with --allow-unkeyed-chains)');
      }
      keyedMet ||= keyed;
      if (chain?.keyed && !keyed) return broken(seq, 'the row has a plain sha256 hash after keyed rows of its chain (it was rewritten without SECRET_KEY)');
      const problem = rowHashProblem(box, row);
      if (problem) return broken(seq, problem);
      const count = (chain?.count ?? 0) + 1;
      chains.set(row.chain, { last: row.hash, count, keyed: keyed || (chain?.keyed ?? false) });
      if (anchors.has(row.hash)) anchorsMet.add(row.hash);
      checked++;
      for (const claim of claims.get(claimKey(row.chain, seq)) ?? []) {
        if (claim.hash !== row.hash) refuse(claim.source, `the trail does not match it: event ${seq}, the head of chain ${JSON.stringify(row.chain)} it names, has another hash (it was rewritten)`);
        else if (count < claim.count) refuse(claim.source, `the trail does not match it: chain ${JSON.stringify(row.chain)} has ${count} events up to event ${seq}, it names ${claim.count} (rows were removed)`);
      }
      claims.delete(claimKey(row.chain, seq));
    }
    if (rows.length < pageSize) break;
    after = String(rows.at(-1)!.seq);
  }

  // Heads the walk never reached: rows removed from the end of a chain, or the whole chain.
  const missing = [...claims.values()].flat().sort((a, b) => (BigInt(a.seq) < BigInt(b.seq) ? -1 : 1));
  const [first] = missing;
  if (first) refuse(first.source, `the trail does not match it: event ${first.seq}, the head of chain ${JSON.stringify(first.chain)} (${first.count} events) it names, is no longer in the trail (rows were removed)`);
  return { ok: !refused, checked, chains: chains.size, checkpoints, ...(refused ? { refused } : {}) };
}

function claimKey(chain: string, seq: string): string {
  return `${chain}\n${seq}`;
}

function addClaim(claims: Map<string, Claim[]>, head: ChainHead, source: string): void {
  const key = claimKey(head.chain, head.seq);
  const list = claims.get(key) ?? [];
  const same = list.find((c) => c.hash === head.hash);
  if (same) same.count = Math.max(same.count, head.count);
  else list.push({ chain: head.chain, seq: head.seq, hash: head.hash, count: head.count, source });
  claims.set(key, list);
}
