import type { FastifyPluginAsync } from 'fastify'
import { firstSuccessAnswer, registerEndpoint } from '../endpoint.js'
import { firstSuccessResponses } from '../schema.js'

/** GET /api/first?timeout=<ms>: FANOUT_REQUESTS attempts at once; the first success, 408 or 502. */
const firstRoute: FastifyPluginAsync = async (fastify) => {
  registerEndpoint(fastify, { endpoint: 'first', summary: 'The first success of attempts sent at once', responses: firstSuccessResponses, answer: firstSuccessAnswer })
}

export default firstRoute
