import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import underPressure from '@fastify/under-pressure'
import { AcceptQueueWatch, acceptQueueLength } from '../lib/accept-queue.js'

/** How often the event loop's health is sampled: often enough to start shedding within a tenth of a second. */
const SAMPLE_INTERVAL_MS = 100

/**
 * How often the accept queue is read. A connection storm fills it within tens of milliseconds, and shedding
 * must start before the connections already queued have waited too long. One read costs well under 0.1 ms.
 */
const ACCEPT_WAIT_SAMPLE_INTERVAL_MS = 10

/**
 * under-pressure's health check, used as one more overload signal: unhealthy while a connection has waited
 * more than `maxWaitMs` in the accept queue (see lib/accept-queue.ts). Shedding makes each turn of the event
 * loop cheap, so the queue drains.
 */
function acceptWaitCheck (fastify: FastifyInstance, maxWaitMs: number): { healthCheck: () => Promise<boolean>, healthCheckInterval: number } {
  const watch = new AcceptQueueWatch()
  let accepted = 0
  fastify.server.on('connection', () => { accepted++ })
  const healthCheck = async (): Promise<boolean> => {
    const address = fastify.server.address()
    // under-pressure runs the first check while registering, before the server listens.
    if (address === null || typeof address === 'string') return true
    const oldestWaitMs = watch.sample(acceptQueueLength(address.port), accepted, performance.now())
    accepted = 0
    return oldestWaitMs <= maxWaitMs
  }
  return { healthCheck, healthCheckInterval: ACCEPT_WAIT_SAMPLE_INTERVAL_MS }
}

/**
 * When the event loop is saturated every request would miss its deadline, so new requests get an
 * immediate JSON 503 with Retry-After instead. Probes and metrics are exempt (see lib/probes.ts). The
 * signals: event-loop delay, event-loop utilization, and how long new connections wait to be accepted.
 * With OVERLOAD_HOLD_HEDGES, calls in flight do not hedge while any of them says overloaded (routes/api/smart).
 * Beyond MAX_CLIENT_CONNECTIONS open connections, new ones are closed at once: a process out of file
 * descriptors cannot even answer 503, and its own timers (under-pressure's memory sampling among them) fail.
 */
export default fp(async (fastify) => {
  const {
    OVERLOAD_MAX_EVENT_LOOP_DELAY_MS, OVERLOAD_MAX_EVENT_LOOP_UTILIZATION, OVERLOAD_MAX_ACCEPT_WAIT_MS,
    RETRY_AFTER_SECONDS, MAX_CLIENT_CONNECTIONS
  } = fastify.config
  fastify.server.maxConnections = MAX_CLIENT_CONNECTIONS
  await fastify.register(underPressure, {
    maxEventLoopDelay: OVERLOAD_MAX_EVENT_LOOP_DELAY_MS,
    maxEventLoopUtilization: OVERLOAD_MAX_EVENT_LOOP_UTILIZATION,
    // 'interval' judges the last sample, not the average since start-up.
    eventLoopUtilizationMode: 'interval',
    sampleInterval: SAMPLE_INTERVAL_MS,
    retryAfter: RETRY_AFTER_SECONDS,
    message: 'The service is overloaded; retry shortly.',
    ...(OVERLOAD_MAX_ACCEPT_WAIT_MS > 0 ? acceptWaitCheck(fastify, OVERLOAD_MAX_ACCEPT_WAIT_MS) : {})
  })
}, { name: 'load-shedding', dependencies: ['config'] })
