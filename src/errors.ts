/**
 * The one error a request can end in on our Fastify routes: an HTTP status, an OAuth-style `error` code and
 * an `error_description` saying what to fix. The error handler (src/http/errors.ts) answers it as
 * `{ error, error_description }`, or as a page for a person; anything that is not one of these is our own
 * fault, logged and answered as `server_error`. Stores throw it too, for what their callers asked wrongly
 * (a duplicate id, an unknown patient), so no layer converts one error into another by hand.
 */
export class HttpProblem extends Error {
  override name = 'HttpProblem';

  constructor(
    readonly statusCode: number,
    readonly error: string,
    description: string,
    options?: ErrorOptions,
  ) {
    super(description, options);
  }

  get error_description(): string {
    return this.message;
  }

  /** 400 `invalid_request`: the request says something wrong; the description says what. */
  static invalid(description: string): HttpProblem {
    return new HttpProblem(400, 'invalid_request', description);
  }

  static forbidden(description: string): HttpProblem {
    return new HttpProblem(403, 'forbidden', description);
  }

  static notFound(description: string): HttpProblem {
    return new HttpProblem(404, 'not_found', description);
  }

  static conflict(description: string): HttpProblem {
    return new HttpProblem(409, 'conflict', description);
  }
}
