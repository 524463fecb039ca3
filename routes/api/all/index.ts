import type { FastifyPluginAsync } from 'fastify'
import { allAnswer, registerEndpoint } from '../endpoint.js'
import { allResponses } from '../schema.js'

/**
 * GET /api/all?timeout=<ms>: FANOUT_REQUESTS attempts at once; once every one has ended, their successes in the order
 * they arrived. 408 when the timeout passes before that, 502 when none succeeded.
 */
const allRoute: FastifyPluginAsync = async (fastify) => {
  registerEndpoint(fastify, { endpoint: 'all', summary: 'Every success of attempts sent at once', responses: allResponses, answer: allAnswer })
}

export default allRoute
