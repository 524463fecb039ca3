import type { FastifyPluginAsync } from 'fastify'
import { notShedUnderLoad } from '../../lib/probes.js'

/**
 * Readiness: 200 while this instance takes traffic. From the moment shutdown begins it answers 503, which tells
 * a load balancer or Kubernetes to send new requests elsewhere while the instance drains (plugins/shutdown.ts).
 */
const readyRoute: FastifyPluginAsync = async (fastify) => {
  fastify.get('/', { config: notShedUnderLoad, schema: { summary: 'Readiness', tags: ['Operations'] } }, async (request, reply) => {
    if (fastify.isShuttingDown()) {
      reply.header('retry-after', String(fastify.config.RETRY_AFTER_SECONDS))
      throw fastify.httpErrors.serviceUnavailable('The service is shutting down; send new requests to another instance.')
    }
    return { status: 'ready' }
  })
}

export default readyRoute
