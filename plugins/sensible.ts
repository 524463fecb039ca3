import fp from 'fastify-plugin'
import sensible from '@fastify/sensible'

/** `fastify.httpErrors` and friends: HTTP errors with the right status and name. */
export default fp(async (fastify) => {
  await fastify.register(sensible)
}, { name: 'sensible' })
