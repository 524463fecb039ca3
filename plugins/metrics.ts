import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

/** Durations from 1 ms to 60 s, roughly three buckets per decade. */
const DURATION_BUCKETS_SECONDS = [
  0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 20, 30, 60
]

/** Lateness of a 408, from half a millisecond to 10 s. */
const OVERSHOOT_BUCKETS_SECONDS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]

/** How a client request to an /api endpoint ended. */
export type RequestOutcome = 'success' | 'timeout' | 'upstream_error' | 'invalid' | 'client_closed' | 'overloaded' | 'error'

export interface SmartMetrics {
  registry: Registry
  requests: Counter<'endpoint' | 'outcome'>
  upstreamAttempts: Counter<'endpoint' | 'result'>
  hedges: Counter
  hedgeWins: Counter
  hedgesThrottled: Counter<'reason'>
  requestDuration: Histogram<'endpoint' | 'outcome'>
  upstreamAttemptDuration: Histogram<'endpoint' | 'result'>
  deadlineOvershoot: Histogram<'endpoint'>
  shedShare: Gauge
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: SmartMetrics
  }
}

/**
 * The service's own metrics, with the names dashboards rely on, in a registry of their own. Two gauges read at
 * scrape time live with the state they read: smart_hedge_delay_seconds and smart_hedge_pause_seconds
 * (plugins/hedge-admission.ts).
 */
export function createMetrics (): SmartMetrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const registers = [registry]
  return {
    registry,
    requests: new Counter({
      name: 'smart_requests_total',
      help: 'Requests to the /api endpoints (smart, first, all, within-timeout) by how they ended.',
      labelNames: ['endpoint', 'outcome'],
      registers
    }),
    upstreamAttempts: new Counter({
      name: 'smart_upstream_attempts_total',
      help: 'Upstream attempts by endpoint and how they ended (aborted: still running when the call ended).',
      labelNames: ['endpoint', 'result'],
      registers
    }),
    hedges: new Counter({
      name: 'smart_hedges_total',
      help: 'Calls to /api/smart that sent hedges.',
      registers
    }),
    hedgeWins: new Counter({
      name: 'smart_hedge_wins_total',
      help: 'Calls to /api/smart whose answer came from a hedge rather than from the first attempt.',
      registers
    }),
    hedgesThrottled: new Counter({
      name: 'smart_hedges_throttled_total',
      help: 'Due hedges held back: reason="pushback" while an upstream\'s Retry-After is in force, "overload" while the service sheds load, ' +
        '"budget" when the hedge budget ran low, "hopeless" when less time was left than the fastest recent success took (HEDGE_POLICY=adaptive).',
      labelNames: ['reason'],
      registers
    }),
    requestDuration: new Histogram({
      name: 'smart_request_duration_seconds',
      help: 'Time from the arrival of a request to an /api endpoint to its answer.',
      labelNames: ['endpoint', 'outcome'],
      buckets: DURATION_BUCKETS_SECONDS,
      registers
    }),
    upstreamAttemptDuration: new Histogram({
      name: 'smart_upstream_attempt_duration_seconds',
      help: 'Duration of each upstream attempt, until it ended or was aborted.',
      labelNames: ['endpoint', 'result'],
      buckets: DURATION_BUCKETS_SECONDS,
      registers
    }),
    deadlineOvershoot: new Histogram({
      name: 'smart_deadline_overshoot_seconds',
      help: "How late each answer at the deadline (408, or /api/within-timeout's 200) went out compared with the client's deadline.",
      labelNames: ['endpoint'],
      buckets: OVERSHOOT_BUCKETS_SECONDS,
      registers
    }),
    shedShare: new Gauge({
      name: 'smart_overload_shed_ratio',
      help: 'Share of new requests to the /api endpoints the service sheds right now (0 to 1).',
      registers
    })
  }
}

/** Decorates `fastify.metrics`; routes/metrics serves them. */
export default fp(async (fastify) => {
  fastify.decorate('metrics', createMetrics())
}, { name: 'metrics' })
