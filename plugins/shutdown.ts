import fp from 'fastify-plugin'
import { setTimeout as sleep } from 'node:timers/promises'

declare module 'fastify' {
  interface FastifyInstance {
    /** True from the moment shutdown begins: /ready answers 503 from then on. */
    isShuttingDown: () => boolean
  }
}

/**
 * Shutdown as load balancers and Kubernetes expect it (a "lame duck"), in two phases, when the server closes
 * (server.ts closes it on SIGTERM/SIGINT):
 *
 * 1. Draining, for SHUTDOWN_DRAIN_MS: /ready answers 503 at once, so that balancers take the instance out of
 *    rotation, but every request is still served normally, on new connections too. Every answer carries
 *    `Connection: close`, so each pooled keep-alive connection ends right after an answer, when its client knows
 *    not to reuse it. Closing idle connections instead would race the balancer's next request on them: it would
 *    meet a reset, fail, and count against the instance.
 * 2. Closing: the server stops listening and Node closes the connections that are idle. A client whose idle
 *    connections outlive the drain can still meet that race: its idle timeout belongs below SHUTDOWN_DRAIN_MS
 *    (deploy/nginx.conf's is). Requests in flight finish, each bounded by its own deadline, and their answers close
 *    their connections. A request that still arrives on an open connection gets a JSON 503 with Retry-After.
 */
export default fp(async (fastify) => {
  const { SHUTDOWN_DRAIN_MS: drainMs, RETRY_AFTER_SECONDS } = fastify.config
  const retryAfter = String(RETRY_AFTER_SECONDS)
  let phase: 'serving' | 'draining' | 'closing' = 'serving'

  fastify.decorate('isShuttingDown', () => phase !== 'serving')

  // Fastify runs preClose hooks before it stops listening: the drain happens here, for every way the server closes.
  fastify.addHook('preClose', async () => {
    phase = 'draining'
    // Without a listening socket (an app used through inject), there is no balancer to drain.
    if (drainMs > 0 && fastify.server.listening) {
      fastify.log.info({ drainMs }, 'draining: /ready answers 503, requests are still served')
      await sleep(drainMs)
    }
    phase = 'closing'
    fastify.log.info('stopped listening; finishing the requests in flight')
  })

  fastify.addHook('onSend', (request, reply, payload, done) => {
    if (phase !== 'serving') reply.header('connection', 'close')
    done(null, payload)
  })

  fastify.addHook('onRequest', (request, reply, done) => {
    if (phase !== 'closing') {
      done()
      return
    }
    reply.header('retry-after', retryAfter)
    done(fastify.httpErrors.serviceUnavailable('The service is shutting down; retry on another instance.'))
  })
}, { name: 'shutdown', dependencies: ['config', 'sensible'] })
