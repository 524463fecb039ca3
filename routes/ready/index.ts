import type { FastifyPluginAsync } from 'fastify'
import { notShedUnderLoad } from '../../lib/probes.js'

/**
 * Readiness: 200 while this instance takes traffic. Once shutdown begins, the shutdown plugin answers
 * every request, this one included, with 503, which is what tells a load balancer to drain it.
 */
const readyRoute: FastifyPluginAsync = async (fastify) => {
  fastify.get('/', { config: notShedUnderLoad }, async () => ({ status: 'ready' }))
}

export default readyRoute
