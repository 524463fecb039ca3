import { Type, type Static } from '@sinclair/typebox'
import { LARGEST_TIMER_MS, REFERENCE_HEDGE_DELAY_MS, REFERENCE_HEDGE_REQUESTS } from './constants.js'
import { readEnvironment } from './environment.js'

/**
 * Every setting of the service, read from the environment and validated here and nowhere else.
 * An empty UPSTREAM_URL means "start the built-in simulator and call it".
 */
export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
  HOST: Type.String({ minLength: 1, default: '127.0.0.1' }),
  UPSTREAM_URL: Type.Union([Type.Literal(''), Type.String({ pattern: '^https?://[^\\s]+$' })], {
    default: '',
    description: 'an http:// or https:// URL, or empty for the built-in simulator'
  }),
  HEDGE_DELAY_MS: Type.Integer({ minimum: 0, maximum: LARGEST_TIMER_MS, default: REFERENCE_HEDGE_DELAY_MS }),
  HEDGE_REQUESTS: Type.Integer({ minimum: 0, maximum: 10, default: REFERENCE_HEDGE_REQUESTS }),
  // Hedge budget (off with 0): a bucket of this many tokens; failed attempts drain it, and hedges
  // fire only while it is more than half full, so a down upstream does not get 1 + HEDGE_REQUESTS times the load.
  HEDGE_BUDGET_TOKENS: Type.Integer({ minimum: 0, maximum: 100000, default: 0 }),
  // Tokens each successful attempt puts back into the hedge budget.
  HEDGE_BUDGET_TOKEN_RATIO: Type.Number({ exclusiveMinimum: 0, maximum: 1000, default: 0.1 }),
  // fixed: hedge after HEDGE_DELAY_MS, the reference schedule. adaptive: after the HEDGE_QUANTILE quantile of recent
  // first-attempt latencies, and never a hedge that cannot finish in the time left (lib/adaptive-hedge-delay.ts).
  HEDGE_POLICY: Type.Union([Type.Literal('fixed'), Type.Literal('adaptive')], { default: 'fixed' }),
  HEDGE_QUANTILE: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, default: 0.9 }),
  // The longest pause in hedging an upstream's Retry-After (on 429 or 503) can impose; 0 ignores pushback.
  MAX_PUSHBACK_MS: Type.Integer({ minimum: 0, maximum: LARGEST_TIMER_MS, default: 30000 }),
  // Attempts that /api/first, /api/all and /api/within-timeout start at once.
  FANOUT_REQUESTS: Type.Integer({ minimum: 1, maximum: 10, default: 3 }),
  MAX_TIMEOUT_MS: Type.Integer({ minimum: 1, maximum: LARGEST_TIMER_MS, default: 60000 }),
  MAX_BODY_BYTES: Type.Integer({ minimum: 1, default: 1048576 }),
  // Upstream connections open at once; attempts beyond it wait for a free one (until their deadline). Each is a
  // file descriptor: without a cap, 5000 requests in flight with 3 attempts each need 15 000 of them, and a
  // process that runs out of descriptors crashes instead of answering 408.
  UPSTREAM_MAX_SOCKETS: Type.Integer({ minimum: 1, maximum: 1000000, default: 1024 }),
  // Client connections open at once; further ones are closed as soon as they are accepted. With
  // UPSTREAM_MAX_SOCKETS it bounds the descriptors the service needs, so a flood of clients cannot exhaust them.
  MAX_CLIENT_CONNECTIONS: Type.Integer({ minimum: 1, maximum: 1000000, default: 10000 }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info' }
  ),
  // After SIGTERM/SIGINT, how long the service goes on serving as a lame duck before it stops listening: /ready
  // answers 503 and every answer carries `Connection: close`, so load balancers move traffic away and end their
  // pooled connections cleanly (0: stop listening at once). See plugins/shutdown.ts.
  SHUTDOWN_DRAIN_MS: Type.Integer({ minimum: 0, maximum: LARGEST_TIMER_MS, default: 5000 }),
  // Once the service has stopped listening, requests in flight get this long to finish before the process exits
  // anyway.
  SHUTDOWN_GRACE_MS: Type.Integer({ minimum: 0, maximum: LARGEST_TIMER_MS, default: 30000 }),
  // Load shedding: answer 503 at once while most new connections of the last second waited longer than this
  // before the service got to them (0 turns it off). See plugins/load-shedding.ts.
  OVERLOAD_MAX_WAIT_MS: Type.Integer({ minimum: 0, maximum: LARGEST_TIMER_MS, default: 200 }),
  // While shedding load, hold back the hedges of calls in flight. Off by default: the schedule of SPEC §4 then
  // holds in every condition.
  OVERLOAD_HOLD_HEDGES: Type.Boolean({ default: false }),
  // The Retry-After (seconds) sent with every 503.
  RETRY_AFTER_SECONDS: Type.Integer({ minimum: 1, maximum: 3600, default: 1 })
})

export type Config = Static<typeof ConfigSchema>

/**
 * Settings that no longer exist, with what replaced them. Ignoring one silently could turn on what its user
 * had turned off (e.g. OVERLOAD_MAX_EVENT_LOOP_DELAY_MS=0 meant "no load shedding").
 */
const REPLACED_SETTINGS: Record<string, string> = {
  OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: 'OVERLOAD_MAX_WAIT_MS',
  OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: 'OVERLOAD_MAX_WAIT_MS',
  OVERLOAD_MAX_ACCEPT_WAIT_MS: 'OVERLOAD_MAX_WAIT_MS'
}

/**
 * Validates the given environment (process.env by default) and returns the typed configuration.
 * Throws an Error whose message names every offending variable and its value, e.g.
 * `HEDGE_DELAY_MS must be >= 0 (got "-1")`.
 */
export function loadConfig (environment: Record<string, string | undefined> = process.env): Config {
  const replaced = Object.keys(REPLACED_SETTINGS).filter((name) => environment[name] !== undefined)
  if (replaced.length > 0) {
    throw new Error(replaced.map((name) => `${name} is no longer a setting; use ${REPLACED_SETTINGS[name]} (see README, "Overload")`).join('; '))
  }
  return readEnvironment(ConfigSchema, environment)
}
