import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { hedgedCall, type HedgeResult } from '../../../lib/hedging.js'
import { CLIENT_CLOSED_REQUEST, ClientClosedRequestError, DeadlineExceededError } from '../../../lib/errors.js'
import { serverTimingHeader } from '../../../lib/server-timing.js'
import type { HedgeBudget } from '../../../lib/hedge-budget.js'
import type { AttemptFailure, UpstreamAttempt } from '../../../plugins/upstream-client.js'
import type { RequestOutcome, SmartMetrics } from '../../../plugins/metrics.js'
import { RawJson, serializeSmartAnswer, smartQuerySchema, smartResponseSchemas, timeoutErrorMessage } from './schema.js'

type SmartResult = HedgeResult<string, AttemptFailure>

/** What the handler learned, kept for the request's log line, metrics and Server-Timing header. */
interface SmartCall {
  timeoutMs: number
  result: SmartResult
}

declare module 'fastify' {
  interface FastifyRequest {
    smartCall: SmartCall | null
  }
}

/** How long after the deadline an attempt's own time limit ends, if the deadline somehow did not stop it. */
const ATTEMPT_TIMEOUT_BACKSTOP_MS = 1000

/** Methods that exist on the server but not on this resource: they get 405, not 404. */
const UNSUPPORTED_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'] as const

const OUTCOME_OF_RESULT: Record<SmartResult['kind'], RequestOutcome> = {
  success: 'success',
  deadline: 'timeout',
  all_failed: 'upstream_error',
  cancelled: 'client_closed'
}

/** Requests that never reached the hedged call: rejected by validation, or shed before the handler. */
function outcomeWithoutCall (statusCode: number): RequestOutcome {
  return statusCode === 503 ? 'overloaded' : 'invalid'
}

/**
 * GET /api/smart?timeout=<ms>: calls the upstream on the hedging schedule and answers with the first
 * success, 408 when the timeout passes first, 502 when every attempt failed before it.
 */
const smartRoute: FastifyPluginAsyncTypebox = async (fastify) => {
  const { MAX_TIMEOUT_MS, HEDGE_DELAY_MS, HEDGE_REQUESTS, OVERLOAD_HOLD_HEDGES } = fastify.config
  const { metrics, upstream, hedgeBudget } = fastify
  /** Why a hedge that is due must not fire, or null when it may. */
  const holdHedgeBack = (): 'overload' | 'budget' | null => {
    // Extra attempts would deepen an overload the service is already shedding (when so configured).
    if (OVERLOAD_HOLD_HEDGES && fastify.isUnderPressure()) return 'overload'
    // The hedge budget (when on) ran low: the upstream is failing.
    if (hedgeBudget !== null && !hedgeBudget.allowsHedge()) return 'budget'
    return null
  }
  const mayHedge = (): boolean => {
    const reason = holdHedgeBack()
    if (reason === null) return true
    metrics.hedgesThrottled.inc({ reason })
    return false
  }
  fastify.decorateRequest('smartCall', null)

  fastify.get('/', {
    schema: { querystring: smartQuerySchema(MAX_TIMEOUT_MS), response: smartResponseSchemas(MAX_TIMEOUT_MS) },
    schemaErrorFormatter: (errors) => new Error(timeoutErrorMessage(errors, MAX_TIMEOUT_MS)),
    serializerCompiler: serializeSmartAnswer,
    onSend: async (request, reply) => {
      reply.header('server-timing', serverTimingHeader(reply.elapsedTime, request.smartCall?.result.attempts ?? []))
    },
    onResponse: async (request, reply) => {
      // A request whose client left has no response to wait for: the handler recorded it already.
      if (request.smartCall?.result.kind !== 'cancelled') record(metrics, request, reply.statusCode, reply.elapsedTime)
    }
  }, async (request, reply) => {
    const timeoutMs = request.query.timeout === undefined ? MAX_TIMEOUT_MS : Number(request.query.timeout)
    // The deadline counts from the request's arrival, not from the handler's start.
    const budgetMs = timeoutMs - reply.elapsedTime
    const deadline = performance.now() + budgetMs
    const result = await hedgedCall({
      budgetMs,
      hedgeDelayMs: HEDGE_DELAY_MS,
      hedgeRequests: HEDGE_REQUESTS,
      cancelSignal: request.signal,
      mayHedge,
      // The hedged call's deadline timer aborts every attempt; each attempt's own time limit (got's timer)
      // ends a little later, as a backstop only. Ending together, both would fire under load, and got's
      // would build a TimeoutError per attempt that nobody needs.
      startAttempt: (signal) => new Promise<UpstreamAttempt>((resolve) => {
        // Connections are opened in the check phase, once every request that arrived in this turn of the
        // event loop has been read and has its deadline timer: in a burst, the last request must not wait
        // for all the connections opened for the ones before it (its deadline counts from its arrival).
        setImmediate(() => resolve(upstream.attempt(signal, deadline + ATTEMPT_TIMEOUT_BACKSTOP_MS - performance.now(), request.id)))
      })
    })
    request.smartCall = { timeoutMs, result }
    if (hedgeBudget !== null) chargeBudget(hedgeBudget, result)
    switch (result.kind) {
      case 'success':
        return { success: true as const, response: new RawJson(result.value) }
      case 'deadline':
        throw DeadlineExceededError.create(timeoutMs)
      case 'all_failed':
        throw fastify.httpErrors.badGateway(`Every upstream attempt failed: ${result.failures.join('; ')}.`)
      case 'cancelled':
        // Nothing will be sent, so Fastify's onResponse hooks will not run for this request.
        record(metrics, request, CLIENT_CLOSED_REQUEST, reply.elapsedTime)
        throw ClientClosedRequestError.create()
    }
  })

  const refuseMethod = async (request: FastifyRequest, reply: FastifyReply): Promise<never> => {
    reply.header('allow', 'GET, HEAD')
    throw fastify.httpErrors.methodNotAllowed(`${request.method} is not supported on /api/smart; use GET.`)
  }
  fastify.route({
    method: [...UNSUPPORTED_METHODS],
    url: '/',
    // Refused before the body is read: whatever it carries (malformed, unknown type, huge), it is a 405.
    onRequest: refuseMethod,
    handler: refuseMethod
  })
}

/** One info line per request, each attempt at debug, and the metrics of the request and its attempts. */
function record (metrics: SmartMetrics, request: FastifyRequest, statusCode: number, elapsedMs: number): void {
  const call = request.smartCall
  const outcome = call === null ? outcomeWithoutCall(statusCode) : OUTCOME_OF_RESULT[call.result.kind]
  const seconds = elapsedMs / 1000
  metrics.requests.inc({ outcome })
  metrics.requestDuration.observe({ outcome }, seconds)
  const attempts = call?.result.attempts ?? []
  if (attempts.length > 1) metrics.hedges.inc()
  for (const attempt of attempts) {
    const durationMs = attempt.endedAt - attempt.startedAt
    const { result } = attempt
    metrics.upstreamAttempts.inc({ result })
    metrics.upstreamAttemptDuration.observe({ result }, durationMs / 1000)
    request.log.debug({ attempt: attempt.attempt, result, startedAtMs: round(attempt.startedAt), durationMs: round(durationMs), detail: attempt.detail }, 'upstream attempt')
  }
  if (call?.result.kind === 'deadline') {
    metrics.deadlineOvershoot.observe(Math.max(0, elapsedMs - call.timeoutMs) / 1000)
  }
  request.log.info({
    outcome,
    statusCode,
    timeoutMs: call?.timeoutMs,
    attempts: attempts.length,
    winner: call?.result.kind === 'success' ? call.result.winner : undefined,
    responseTimeMs: round(elapsedMs)
  }, 'smart request')
}

/** Every attempt that reached a verdict counts; aborted ones say nothing about the upstream's health. */
function chargeBudget (budget: HedgeBudget, result: SmartResult): void {
  for (const { result: attemptResult } of result.attempts) {
    if (attemptResult === 'success') budget.recordSuccess()
    else if (attemptResult !== 'aborted') budget.recordFailure()
  }
}

/** Tenths of a millisecond are plenty for logs. */
function round (ms: number): number {
  return Math.round(ms * 10) / 10
}

export default smartRoute
