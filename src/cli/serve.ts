import { createServer } from 'node:net';

import type { FastifyInstance } from 'fastify';

import { buildApp } from '../app.js';
import type { Config } from '../config/config.js';
import { createLogger } from '../http/logger.js';
import { listenForMetrics } from '../http/metrics.js';
import { startTracing } from '../observability/tracing.js';
import { CommandFailed } from './errors.js';
import { DEMO_CLIENT_ID, DEMO_USERS } from '../seed/demo.js';
import { SMART_CONFIGURATION_PATH } from '../smart/smart-configuration.js';

/** Builds the app and listens until SIGTERM or SIGINT, then finishes the requests in flight and exits. */
export async function serve(config: Config): Promise<number> {
  const started = performance.now();
  const log = createLogger(config.logLevel);
  // State is unknown after either: log it where operators look, and let the supervisor restart us.
  process.on('uncaughtException', (error) => {
    log.fatal({ err: error }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (reason) => {
    log.fatal({ err: reason }, 'unhandled promise rejection');
    process.exit(1);
  });
  // Until it listens, the server may be waiting for its database: a stop signal then ends the wait.
  const starting = new AbortController();
  const stopStarting = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'stopping before the server started');
    starting.abort();
  };
  process.on('SIGTERM', stopStarting);
  process.on('SIGINT', stopStarting);
  // A port another process holds would otherwise be found only after migrations and key creation.
  await checkPortFree(config.host, config.port);
  if (config.metricsPort !== undefined) await checkPortFree(config.host, config.metricsPort);
  const tracing = config.otlpEndpoint ? await startTracing(config.otlpEndpoint) : undefined;
  let app: FastifyInstance;
  try {
    app = await buildApp(config, { logger: log, signal: starting.signal });
  } catch (error) {
    if (starting.signal.aborted) return 0;
    throw error;
  } finally {
    process.off('SIGTERM', stopStarting);
    process.off('SIGINT', stopStarting);
  }
  let address: string;
  try {
    address = await app.listen({ port: config.port, host: config.host });
  } catch (error) {
    await app.close();
    throw listenProblem(error, config.host, config.port) ?? error;
  }
  const metricsServer = config.metricsPort === undefined ? undefined : await listenForMetrics(app.runtime.metrics, config.host, config.metricsPort);
  log.info({ sandbox: config.sandbox, mode: config.sandboxReason }, config.sandbox ? 'sandbox mode: demo data, the launcher, open registration and the embedded FHIR server are on' : 'deployment mode: no demo data, launcher or embedded FHIR server');
  log.info({ address, issuer: config.issuer, database: config.database.kind, metricsPort: config.metricsPort, tracing: config.otlpEndpoint, startupMs: Math.round(performance.now() - started) }, 'listening');
  if (config.sandbox) process.stdout.write(banner(config, address));

  let closing = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (closing) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    log.info({ signal }, 'shutting down: finishing requests in flight');
    const timer = setTimeout(() => {
      log.error(`requests still in flight after ${config.shutdownTimeoutSeconds} s; exiting`);
      process.exit(1);
    }, config.shutdownTimeoutSeconds * 1000);
    timer.unref();
    metricsServer?.close();
    // The spans of the last requests are sent before the process exits.
    const stopped = app.close().then(() => tracing?.shutdown());
    stopped.then(
      () => {
        log.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  return new Promise<number>(() => undefined); // runs until a signal
}

/** Binds the address for a moment: the one-line reason when the server could not listen there. */
async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const probe = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ port, host, exclusive: true }, resolve);
    });
  } catch (error) {
    throw listenProblem(error, host, port) ?? error;
  } finally {
    if (probe.listening) await new Promise((resolve) => probe.close(resolve));
  }
}

function listenProblem(error: unknown, host: string, port: number): CommandFailed | undefined {
  switch (String((error as NodeJS.ErrnoException).code)) {
    case 'EADDRINUSE':
      return new CommandFailed(`port ${port} on ${host} is in use by another process (another server?): stop it, or set PORT to a free port`);
    case 'EACCES':
      return new CommandFailed(`port ${port} on ${host} needs privileges this process does not have: set PORT to 1024 or above`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
      return new CommandFailed(`cannot listen on ${host}: no such address on this machine; set HOST to one of its addresses (0.0.0.0: all of them)`);
    default:
      return undefined;
  }
}

function banner(config: Config, address: string): string {
  const fhir = config.fhirBaseUrls[0]!;
  const db = config.database.kind === 'pglite' ? `embedded (PGlite) in ${config.database.dataDir}` : 'Postgres';
  // The issuer is the address to open: a browser on another name for this host (127.0.0.1 for localhost) is
  // sent to it, since the sample app's redirect URI and the cookies are the issuer's.
  return [
    '',
    `SMART on FHIR authorization server — sandbox. Open ${config.issuer}/`,
    '',
    `  Launcher:          ${config.issuer}/launcher`,
    `  Sample app:        ${config.issuer}/sample-app/launch.html?iss=${encodeURIComponent(fhir)}`,
    `  Issuer:            ${config.issuer}`,
    `  FHIR base (aud):   ${config.fhirBaseUrls.join(', ')}`,
    `  SMART discovery:   ${fhir}${SMART_CONFIGURATION_PATH}`,
    `  OpenID discovery:  ${config.issuer}/.well-known/openid-configuration`,
    `  Database:          ${db}`,
    `  Listening on:      ${address}`,
    '',
    '  Demo logins:',
    ...DEMO_USERS.map((u) => `    ${u.username.padEnd(10)} password ${u.password.padEnd(16)} ${u.fhirUser} (${u.name})`),
    `  Demo public client: ${DEMO_CLIENT_ID}`,
    '',
  ].join('\n') + '\n';
}

/** Asks the local server whether it is ready; for Docker's HEALTHCHECK, which has no curl in slim images. */
export async function healthcheck(config: Config): Promise<number> {
  const basePath = config.basePath;
  try {
    const res = await fetch(`http://127.0.0.1:${config.port}${basePath}/readyz`, { signal: AbortSignal.timeout(3000) });
    process.stdout.write(`${res.status} ${await res.text()}\n`);
    return res.ok ? 0 : 1;
  } catch (error) {
    process.stdout.write(`unreachable: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}
