/** Thrown for a wrong command line: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** A command that could not do what was asked, for a reason a person can act on: printed alone, exit code 1. */
export class CommandFailed extends Error {}
