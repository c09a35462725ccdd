import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

import { HttpProblem } from '../errors.js';
import { describeInputProblem, inputProblem } from '../security/text.js';

/**
 * Refuses, before any handler runs, a query, path parameter or parsed body holding text no value here may
 * hold (NUL, an unpaired surrogate) or JSON nested absurdly deep: 400 `invalid_request` naming where. Such
 * input would otherwise reach Postgres (which refuses it) or a recursive serializer, and end as a 500.
 * oidc-provider reads its own request bodies; what it stores is guarded in the adapters as well.
 */
export const inputGuard = fp(
  async (app: FastifyInstance) => {
    app.addHook('preValidation', async (request: FastifyRequest) => {
      const problem = inputProblem(request.query, 'query') ?? inputProblem(request.params, 'path') ?? inputProblem(request.body, 'body');
      if (problem) throw HttpProblem.invalid(describeInputProblem(problem));
    });
  },
  { name: 'input-guard', fastify: '5.x' },
);
