import type { FastifyPluginAsync } from 'fastify'
import { withinTimeoutAnswer, registerEndpoint } from '../endpoint.js'
import { withinTimeoutResponses } from '../schema.js'

/**
 * GET /api/within-timeout?timeout=<ms>: FANOUT_REQUESTS attempts at once; the successes that arrived before the
 * timeout, sent when it passes or as soon as every attempt has ended; `[]` when there are none. Never 408 or 502.
 */
const withinTimeoutRoute: FastifyPluginAsync = async (fastify) => {
  registerEndpoint(fastify, { endpoint: 'within-timeout', summary: 'The successes within the timeout', responses: withinTimeoutResponses, answer: withinTimeoutAnswer })
}

export default withinTimeoutRoute
