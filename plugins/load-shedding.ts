import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import underPressure from '@fastify/under-pressure'
import { ConnectionProbe } from '../lib/connection-probe.js'
import { SlidingMedian } from '../lib/sliding-median.js'

/** How often a probe connection measures the wait of new connections. */
const PROBE_INTERVAL_MS = 100

/** The waits are judged by their median over this window (see lib/sliding-median.ts). */
const SMOOTHING_WINDOW_MS = 1000

/**
 * under-pressure's health check: healthy unless most new connections of the last second waited longer than
 * `maxWaitMs` before the service got to them.
 */
function connectionWaitCheck (fastify: FastifyInstance, maxWaitMs: number): { healthCheck: () => Promise<boolean>, healthCheckInterval: number } {
  const probe = new ConnectionProbe(fastify.server)
  const median = new SlidingMedian(SMOOTHING_WINDOW_MS)
  fastify.addHook('onClose', async () => probe.stop())
  const healthCheck = async (): Promise<boolean> => {
    const now = performance.now()
    return median.add(now, probe.sample(now)) <= maxWaitMs
  }
  return { healthCheck, healthCheckInterval: PROBE_INTERVAL_MS }
}

/**
 * When new requests wait longer than the service can afford, they get an immediate JSON 503 with Retry-After
 * instead of a late answer. Probes and metrics are exempt (see lib/probes.ts). The signal is how long a new
 * connection waits before the service gets to it (lib/connection-probe.ts), its median over a second.
 * With OVERLOAD_HOLD_HEDGES, calls in flight do not hedge while it says overloaded (routes/api/smart).
 * Beyond MAX_CLIENT_CONNECTIONS open connections, new ones are closed at once: a process out of file
 * descriptors cannot even answer 503, and its own timers (under-pressure's memory sampling among them) fail.
 */
export default fp(async (fastify) => {
  const { OVERLOAD_MAX_WAIT_MS, RETRY_AFTER_SECONDS, MAX_CLIENT_CONNECTIONS } = fastify.config
  fastify.server.maxConnections = MAX_CLIENT_CONNECTIONS
  await fastify.register(underPressure, {
    retryAfter: RETRY_AFTER_SECONDS,
    message: 'The service is overloaded; retry shortly.',
    ...(OVERLOAD_MAX_WAIT_MS > 0 ? connectionWaitCheck(fastify, OVERLOAD_MAX_WAIT_MS) : {})
  })
}, { name: 'load-shedding', dependencies: ['config'] })
