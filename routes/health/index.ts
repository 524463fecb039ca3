import type { FastifyPluginAsync } from 'fastify'
import { notShedUnderLoad } from '../../lib/probes.js'

/** Liveness: answers 200 while the process can serve requests, busy or not. */
const healthRoute: FastifyPluginAsync = async (fastify) => {
  fastify.get('/', { config: notShedUnderLoad, schema: { summary: 'Liveness', tags: ['Operations'] } }, async () => ({ status: 'ok' }))
}

export default healthRoute
