import fp from 'fastify-plugin'

/**
 * Once the server starts closing (on SIGTERM, see server.ts) it accepts no new connections, and requests
 * still arriving on open keep-alive connections, /ready included, get a JSON 503 with Retry-After and
 * `Connection: close`: that is what tells a load balancer to drain this instance. Requests already in
 * flight finish normally, each bounded by its own deadline.
 */
export default fp(async (fastify) => {
  const retryAfter = String(fastify.config.RETRY_AFTER_SECONDS)
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  // Connections that go idle after closing began (a request in flight has just been answered) are closed,
  // or a keep-alive client (a load balancer's pool) would hold them open and keep the server from closing
  // until the grace period ends. Connections with another request queued stay open for its answer.
  fastify.addHook('onResponse', async () => {
    if (closing) setImmediate(() => fastify.server.closeIdleConnections())
  })
  fastify.addHook('onRequest', async (request, reply) => {
    if (!closing) return
    reply.header('retry-after', retryAfter).header('connection', 'close')
    throw fastify.httpErrors.serviceUnavailable('The service is shutting down; retry on another instance.')
  })
}, { name: 'shutdown', dependencies: ['config', 'sensible'] })
