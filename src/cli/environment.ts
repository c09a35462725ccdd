import { existsSync } from 'node:fs';

import { loadConfig, type Config } from '../config/config.js';

/** The process environment, with the variables of a .env file in the working directory added when there is one. */
export function readEnvironment(): NodeJS.ProcessEnv {
  if (existsSync('.env')) process.loadEnvFile('.env');
  return process.env;
}

export function readConfig(): Config {
  return loadConfig(readEnvironment());
}
