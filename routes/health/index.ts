import type { FastifyPluginAsync } from 'fastify'

/** Liveness: answers 200 while the process can serve requests. */
const healthRoute: FastifyPluginAsync = async (fastify) => {
  fastify.get('/', async () => ({ status: 'ok' }))
}

export default healthRoute
