import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'

/** How often the event loop's health is sampled: often enough to start shedding within a tenth of a second. */
const SAMPLE_INTERVAL_MS = 100

/**
 * When the event loop is saturated every request would miss its deadline, so new requests get an
 * immediate JSON 503 with Retry-After instead. Probes and metrics are exempt (see lib/probes.ts).
 * Beyond MAX_CLIENT_CONNECTIONS open connections, new ones are closed at once: a process out of file
 * descriptors cannot even answer 503, and its own timers (under-pressure's memory sampling among them) fail.
 */
export default fp(async (fastify) => {
  const { OVERLOAD_MAX_EVENT_LOOP_DELAY_MS, OVERLOAD_MAX_EVENT_LOOP_UTILIZATION, RETRY_AFTER_SECONDS, MAX_CLIENT_CONNECTIONS } = fastify.config
  fastify.server.maxConnections = MAX_CLIENT_CONNECTIONS
  await fastify.register(underPressure, {
    maxEventLoopDelay: OVERLOAD_MAX_EVENT_LOOP_DELAY_MS,
    maxEventLoopUtilization: OVERLOAD_MAX_EVENT_LOOP_UTILIZATION,
    // 'interval' judges the last sample, not the average since start-up.
    eventLoopUtilizationMode: 'interval',
    sampleInterval: SAMPLE_INTERVAL_MS,
    retryAfter: RETRY_AFTER_SECONDS,
    message: 'The service is overloaded; retry shortly.'
  })
}, { name: 'load-shedding', dependencies: ['config'] })
