import { ConfigError } from '../config/config.js';
import { DataDirInUseError } from '../db/database.js';
import { connectionRefusal } from '../db/faults.js';
import { migrate, seed } from './database.js';
import { readConfig } from './environment.js';
import { genSecret, keys } from './keys.js';
import { operate } from './operate.js';
import { sandbox } from './sandbox.js';
import { healthcheck, serve } from './serve.js';
import { CommandFailed, UsageError } from './errors.js';

const USAGE = `Usage: smart-auth [command] [options]

Commands:
  serve                      Start the server (default)
  migrate                    Apply pending database migrations and exit
  seed                       Insert the demo users, patients and client where missing
  keys list                  List signing keys and their states
  keys rotate [--alg ALG]... [--force] [--cookies]
                             Promote each algorithm's published next key to signing, retire the
                             current one, publish a new next key (--cookies: also rotate cookie keys)
  clients list               List clients (JSON lines)
  clients create JSON        Register a client from RFC 7591 metadata; prints it with its secret
  clients update ID JSON     Change a client's metadata (e.g. {"payer_role":"provider-access",
                             "organization_identifiers":["http://hl7.org/fhir/sid/us-npi|1234567893"]})
  users create --username U --fhir-user TYPE/ID --name NAME [--role R]... [--password-stdin]
                             Create a user who can sign in; the password is asked for on a terminal,
                             or read from standard input with --password-stdin (never an argument)
  patients import FILE       Import Patient and Encounter resources (FHIR Bundle .json, or .ndjson)
  sandbox reset              Restore the sandbox's FHIR data (the synthetic pack) and its patients and
                             encounters in the directory; what apps wrote is undone (sandbox --help)
  launch create [--patient ID] [--encounter ID] [--client ID] [--user ID] [--intent TEXT] [--no-banner]
                             Create an EHR launch context; prints the launch id
  report patient-access --year YYYY [--format csv|json]
                             CMS-0057-F Patient Access API metrics for a calendar year (UTC)
  attribution import FILE [--organization SYSTEM|VALUE]
                             Import (or replace) an attribution list: a Da Vinci ATR Group (JSON)
  attribution list           List attribution lists (JSON lines)
  audit export [--format ndjson|bundle] [--from ISO] [--to ISO] [--type T] [--limit N]
                             Print audit events as FHIR AuditEvent resources
  audit verify [--checkpoint FILE]... [--allow-unkeyed-chains]
                             Check the audit trail's keyed hash chains and every stored signed checkpoint,
                             and hold the trail to each FILE that audit checkpoint printed; unkeyed chains
                             begun after keyed ones are refused unless allowed (after going back to a release
                             from before keyed chains)
  audit checkpoint           Sign a checkpoint of the audit trail as it stands and print it as JSON, to
                             keep where the database's owner cannot change it
  healthcheck                Exit 0 when the server on PORT answers /readyz (for container health checks)
  gen-secret                 Print a new random SECRET_KEY
  help                       Show this text

Configuration comes from environment variables and a .env file in the working directory;
see .env.example for every variable.`;

/**
 * Runs one command and sets the exit code: 0 done, 1 failed (a bad configuration, a refused operation),
 * 2 a wrong command line (printed with the usage).
 */
export function runCli(argv: readonly string[]): Promise<void> {
  return dispatch(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      if (error instanceof ConfigError) {
        process.stderr.write(`${error.message}\nSee .env.example for every variable and its default.\n`);
        process.exitCode = 1;
      } else if (error instanceof UsageError || (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
        process.stderr.write(`${error.message}\n\n${USAGE}\n`);
        process.exitCode = 2;
      } else if (error instanceof CommandFailed) {
        process.stderr.write(`Failed: ${error.message}\n`);
        process.exitCode = 1;
      } else if (connectionRefusal(error)) {
        process.stderr.write(`Failed: ${connectionRefusal(error)}\n`);
        process.exitCode = 1;
      } else if (error instanceof DataDirInUseError) {
        process.stderr.write(`${error.message}\n`);
        process.exitCode = 1;
      } else {
        process.stderr.write(`Failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
        process.exitCode = 1;
      }
    },
  );
}

async function dispatch(argv: readonly string[]): Promise<number> {
  const [command = 'serve', ...rest] = argv;
  switch (command) {
    case 'serve':
      return serve(readConfig());
    case 'migrate':
      return migrate(readConfig());
    case 'seed':
      return seed(readConfig());
    case 'keys':
      return keys(readConfig(), rest);
    case 'sandbox':
      return sandbox(readConfig(), rest);
    case 'clients':
    case 'users':
    case 'patients':
    case 'launch':
    case 'audit':
    case 'report':
    case 'attribution':
      return operate(command, rest);
    case 'healthcheck':
      return healthcheck(readConfig());
    case 'gen-secret':
      return genSecret();
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}
