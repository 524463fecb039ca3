import fp from 'fastify-plugin'
import { createUpstreamClient, type UpstreamClient } from '../lib/upstream-client.js'

declare module 'fastify' {
  interface FastifyInstance {
    upstream: UpstreamClient
  }
}

/** Decorates `fastify.upstream`: the one got-based client this service calls the upstream with (lib/upstream-client.ts). */
export default fp(async (fastify) => {
  const { MAX_BODY_BYTES, UPSTREAM_MAX_SOCKETS } = fastify.config
  const upstream = createUpstreamClient(fastify.upstreamUrl, { maxBodyBytes: MAX_BODY_BYTES, maxSockets: UPSTREAM_MAX_SOCKETS })
  fastify.addHook('onClose', async () => upstream.close())
  fastify.decorate('upstream', upstream)
}, { name: 'upstream-client', dependencies: ['config', 'upstream-url'] })
