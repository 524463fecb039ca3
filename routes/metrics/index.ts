import type { FastifyPluginAsync } from 'fastify'
import { notShedUnderLoad } from '../../lib/probes.js'

/** GET /metrics: Prometheus text format. */
const metricsRoute: FastifyPluginAsync = async (fastify) => {
  const { registry } = fastify.metrics
  fastify.get('/', { config: notShedUnderLoad, schema: { summary: 'Prometheus metrics', tags: ['Operations'] } }, async (request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}

export default metricsRoute
