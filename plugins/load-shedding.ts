import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import underPressure from '@fastify/under-pressure'
import { ConnectionProbe } from '../lib/connection-probe.js'
import { ShedShare } from '../lib/shed-share.js'
import { SlidingMedian } from '../lib/sliding-median.js'

/** How often a probe connection measures the wait of new connections. */
const PROBE_INTERVAL_MS = 100

/** The waits are judged by their median over this window (see lib/sliding-median.ts). */
const SMOOTHING_WINDOW_MS = 1000

const OVERLOADED_MESSAGE = 'The service is overloaded; retry shortly.'

/**
 * under-pressure's health check and pressure handler. The check samples the wait of new connections and
 * moves the share of requests shed (lib/shed-share.ts): up while most probes of the last second waited
 * longer than `maxWaitMs`, down while they did not; the service counts as under pressure while the share is
 * above 0. The handler then sheds each request with that probability, as under-pressure's own 503 would.
 */
function sheddingOnConnectionWait (fastify: FastifyInstance, maxWaitMs: number, retryAfterSeconds: number) {
  const probe = new ConnectionProbe(fastify.server)
  const median = new SlidingMedian(SMOOTHING_WINDOW_MS)
  const shed = new ShedShare()
  const retryAfter = String(retryAfterSeconds)
  fastify.addHook('onClose', async () => probe.stop())
  const healthCheck = async (): Promise<boolean> => {
    const now = performance.now()
    const { probe: probeSerial, waitMs } = probe.sample(now)
    // Keyed by the probe, so that a probe that still waits counts once, however often it is sampled.
    const share = shed.update(median.add(now, waitMs, probeSerial) > maxWaitMs)
    fastify.metrics.shedShare.set(share)
    return share === 0
  }
  const pressureHandler = async (_request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!shed.sheds()) return
    reply.header('retry-after', retryAfter)
    throw fastify.httpErrors.serviceUnavailable(OVERLOADED_MESSAGE)
  }
  return { healthCheck, healthCheckInterval: PROBE_INTERVAL_MS, pressureHandler }
}

/**
 * When new requests wait longer than the service can afford, a growing share of them get an immediate JSON 503
 * with Retry-After instead of a late answer. Probes and metrics are exempt (see lib/probes.ts). The signal
 * is how long a new connection waits before the service gets to it (lib/connection-probe.ts), its median
 * over a second.
 * With OVERLOAD_HOLD_HEDGES, calls in flight do not hedge while it says overloaded (routes/api/smart).
 * Beyond MAX_CLIENT_CONNECTIONS open connections, new ones are closed at once: a process out of file
 * descriptors cannot even answer 503, and its own timers (under-pressure's memory sampling among them) fail.
 */
export default fp(async (fastify) => {
  const { OVERLOAD_MAX_WAIT_MS, RETRY_AFTER_SECONDS, MAX_CLIENT_CONNECTIONS } = fastify.config
  fastify.server.maxConnections = MAX_CLIENT_CONNECTIONS
  await fastify.register(underPressure, {
    retryAfter: RETRY_AFTER_SECONDS,
    message: OVERLOADED_MESSAGE,
    ...(OVERLOAD_MAX_WAIT_MS > 0 ? sheddingOnConnectionWait(fastify, OVERLOAD_MAX_WAIT_MS, RETRY_AFTER_SECONDS) : {})
  })
}, { name: 'load-shedding', dependencies: ['config', 'metrics', 'sensible'] })
