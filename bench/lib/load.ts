import { Agent, request } from 'node:http';

import autocannon from 'autocannon';

export interface RequestSpec {
  readonly method: 'GET' | 'POST';
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

export interface Run {
  /** Requests per second, mean over the run. */
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** Answers other than 2xx, connection errors and timeouts: must be zero. */
  readonly errors: number;
  readonly ok: number;
  /** The first failed flow's error (loadFlows), so that a run of errors says why. */
  readonly firstError?: string | undefined;
}

export interface LoadOptions {
  readonly duration: number;
  readonly connections: number;
  /** Flows per second across all workers (loadFlows); unset: as fast as the server answers (saturation). */
  readonly rate?: number | undefined;
}

/**
 * Requests at a steady `rate` (open loop: each is sent at its scheduled time whether or not earlier ones
 * have answered, over at most `connections` keep-alive connections), latency counted from the scheduled
 * time. autocannon's own rate limit sends each second's quota in a burst at the start of the second, which
 * measures bursts, not a server held at a given load.
 */
export async function paced(url: string, next: () => RequestSpec, options: LoadOptions & { rate: number }): Promise<Run> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.connections });
  const latencies: number[] = [];
  let errors = 0;
  const started = performance.now();
  const total = Math.floor(options.rate * options.duration);
  const pending: Promise<void>[] = [];
  const send = (scheduled: number) =>
    new Promise<void>((resolve) => {
      const spec = next();
      const req = request(new URL(spec.path, url), { method: spec.method, agent, headers: { ...spec.headers, ...(spec.body ? { 'content-length': Buffer.byteLength(spec.body) } : {}) } }, (res) => {
        res.resume();
        res.on('end', () => {
          if (res.statusCode && res.statusCode < 300) latencies.push(performance.now() - scheduled);
          else errors++;
          resolve();
        });
      });
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(spec.body);
    });
  for (let i = 0; i < total; ) {
    const now = performance.now();
    // Everything due by now goes out, then wait for the next millisecond.
    for (; i < total && started + (i * 1000) / options.rate <= now; i++) pending.push(send(started + (i * 1000) / options.rate));
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / options.duration, p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), errors, ok: latencies.length };
}

/** Runs autocannon against `url`, each request built by `next()` (so bodies can be single-use). */
export async function load(url: string, next: () => RequestSpec, options: LoadOptions): Promise<Run> {
  const result = await autocannon({
    url,
    connections: options.connections,
    duration: options.duration,
    requests: [
      {
        setupRequest: (req) => {
          const spec = next();
          return { ...req, method: spec.method, path: spec.path, headers: { ...spec.headers }, body: spec.body ?? '' };
        },
      },
    ],
  });
  return {
    // Answers that succeeded, per second: refusals are not throughput.
    rps: result['2xx'] / options.duration,
    p50: result.latency.p50,
    p90: result.latency.p90,
    p99: result.latency.p99,
    errors: result.non2xx + result.errors + result.timeouts,
    ok: result['2xx'],
  };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Runs flows from `connections` concurrent workers for `duration` seconds (optionally capped at `rate` per
 * second); each worker gets its own flow from `makeFlow` (its own browser, as each person has theirs).
 */
export async function loadFlows(makeFlow: () => () => Promise<unknown>, options: LoadOptions): Promise<Run> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const end = Date.now() + options.duration * 1000;
  const interval = options.rate ? (1000 * options.connections) / options.rate : 0;
  await Promise.all(
    Array.from({ length: options.connections }, async (_, worker) => {
      const flow = makeFlow();
      if (interval) await new Promise((r) => setTimeout(r, (interval / options.connections) * worker));
      while (Date.now() < end) {
        const started = performance.now();
        try {
          await flow();
          latencies.push(performance.now() - started);
        } catch (error) {
          errors++;
          firstError ??= error instanceof Error ? error.message : String(error);
        }
        const spent = performance.now() - started;
        if (interval && spent < interval) await new Promise((r) => setTimeout(r, interval - spent));
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { rps: latencies.length / options.duration, p50: percentile(latencies, 50), p90: percentile(latencies, 90), p99: percentile(latencies, 99), errors, ok: latencies.length, firstError };
}

export function median<R extends Run>(runs: readonly R[]): R {
  return [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)]!;
}
