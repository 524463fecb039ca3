import fp from 'fastify-plugin'
import { startSimulator } from '../simulator/simulator.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The upstream endpoint every attempt calls: UPSTREAM_URL, or the built-in simulator's. */
    upstreamUrl: string
  }
}

/**
 * Decorates `fastify.upstreamUrl`. With no UPSTREAM_URL configured, it starts the built-in simulator on loopback
 * (and stops it when the server closes), so that `npm start` and the dev server work out of the box.
 */
export default fp(async (fastify) => {
  let url = fastify.config.UPSTREAM_URL
  if (url === '') {
    const simulator = await startSimulator()
    fastify.addHook('onClose', () => simulator.close())
    fastify.log.info({ upstream: simulator.url }, 'UPSTREAM_URL is not set: calling the built-in simulator')
    url = simulator.url
  }
  fastify.decorate('upstreamUrl', url)
}, { name: 'upstream-url', dependencies: ['config'] })
