import type { FastifyPluginAsync } from 'fastify'
import { firstSuccessAnswer, registerEndpoint } from '../endpoint.js'
import { firstSuccessResponses } from '../schema.js'

/**
 * GET /api/smart?timeout=<ms>: one attempt, HEDGE_REQUESTS more after HEDGE_DELAY_MS (or as soon as it fails); the
 * first success, 408 when the timeout passes first, 502 when every attempt failed before it.
 */
const smartRoute: FastifyPluginAsync = async (fastify) => {
  registerEndpoint(fastify, { endpoint: 'smart', summary: 'The first success, with hedged attempts', responses: firstSuccessResponses, answer: firstSuccessAnswer })
}

export default smartRoute
