#!/usr/bin/env node
// The `smart-auth` command (package.json bin, `npm start`, the Docker image): the commands live in src/cli/.
import { runCli } from './cli/main.js';

void runCli(process.argv.slice(2));
