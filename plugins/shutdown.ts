import fp from 'fastify-plugin'

/** Seconds a client should wait before trying again once this instance is going away. */
const RETRY_AFTER_SECONDS = 1

/**
 * Once the server starts closing, requests still arriving on open keep-alive connections get a JSON 503
 * with Retry-After and `Connection: close`, while requests already in flight finish normally.
 */
export default fp(async (fastify) => {
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  fastify.addHook('onRequest', async (request, reply) => {
    if (!closing) return
    reply.header('retry-after', String(RETRY_AFTER_SECONDS)).header('connection', 'close')
    throw fastify.httpErrors.serviceUnavailable('The service is shutting down; retry on another instance.')
  })
}, { name: 'shutdown', dependencies: ['sensible'] })
