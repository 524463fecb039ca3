import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, onRequestAbortAsyncHookHandler, onResponseAsyncHookHandler, onSendAsyncHookHandler } from 'fastify'
import type { Endpoint } from '../lib/call-policies.js'
import { CLIENT_CLOSED_REQUEST } from '../lib/errors.js'
import { serverTimingHeader } from '../lib/server-timing.js'
import type { RequestOutcome } from './metrics.js'

/** The route hooks that record an endpoint's requests. */
export interface TelemetryHooks {
  onSend: onSendAsyncHookHandler
  onResponse: onResponseAsyncHookHandler
  onRequestAbort: onRequestAbortAsyncHookHandler
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The hooks an endpoint's route adds so that its requests are recorded under its name. */
    telemetryHooks: (endpoint: Endpoint) => TelemetryHooks
  }
}

const OUTCOME_OF_STATUS: Record<number, RequestOutcome> = {
  200: 'success',
  400: 'invalid',
  408: 'timeout',
  [CLIENT_CLOSED_REQUEST]: 'client_closed',
  502: 'upstream_error',
  503: 'overloaded'
}

/** How a request to the API ended, by the status it got; any other status is a bug (a 500). */
export function outcomeOf (statusCode: number): RequestOutcome {
  return OUTCOME_OF_STATUS[statusCode] ?? 'error'
}

/** Tenths of a millisecond are plenty for logs. */
function round (ms: number): number {
  return Math.round(ms * 10) / 10
}

/**
 * The one place where requests to the API are recorded, by hooks that each endpoint's route adds (see
 * routes/api/endpoint.ts): one info line per request (each attempt at debug), the metrics, and a Server-Timing
 * header that lets a browser's devtools draw the attempts. Clients that leave before their answer are recorded when they leave (onRequestAbort), with
 * status 499, since no response hook runs for them.
 */
export default fp(async (fastify) => {
  const { metrics } = fastify

  /** `elapsedMs` is undefined for a client that left before its call began: nothing was timed. */
  function record (request: FastifyRequest, endpoint: Endpoint, statusCode: number, elapsedMs: number | undefined): void {
    const call = request.upstreamCall
    const result = call?.result
    const outcome = outcomeOf(statusCode)
    metrics.requests.inc({ endpoint, outcome })
    if (elapsedMs !== undefined) metrics.requestDuration.observe({ endpoint, outcome }, elapsedMs / 1000)
    const attempts = result?.attempts ?? []
    if (endpoint === 'smart' && attempts.length > 1) metrics.hedges.inc()
    if (endpoint === 'smart' && (result?.successes[0]?.attempt ?? 1) > 1) metrics.hedgeWins.inc()
    for (const attempt of attempts) {
      const durationMs = attempt.endedAt - attempt.startedAt
      metrics.upstreamAttempts.inc({ endpoint, result: attempt.result })
      metrics.upstreamAttemptDuration.observe({ endpoint, result: attempt.result }, durationMs / 1000)
      request.log.debug({ attempt: attempt.attempt, result: attempt.result, startedAtMs: round(attempt.startedAt), durationMs: round(durationMs), detail: attempt.detail }, 'upstream attempt')
    }
    if (result?.ending === 'deadline' && elapsedMs !== undefined && call !== null) {
      metrics.deadlineOvershoot.observe({ endpoint }, Math.max(0, elapsedMs - call.deadline.timeoutMs) / 1000)
    }
    request.log.info({
      endpoint,
      outcome,
      statusCode,
      timeoutMs: call?.deadline.timeoutMs,
      attempts: attempts.length,
      winner: result?.successes[0]?.attempt,
      successes: endpoint === 'all' || endpoint === 'within-timeout' ? result?.successes.length : undefined,
      responseTimeMs: elapsedMs === undefined ? undefined : round(elapsedMs)
    }, 'api request')
  }

  const addServerTiming: onSendAsyncHookHandler = async (request: FastifyRequest, reply: FastifyReply) => {
    reply.header('server-timing', serverTimingHeader(reply.elapsedTime, request.upstreamCall?.result?.attempts ?? []))
  }

  fastify.decorate('telemetryHooks', (endpoint: Endpoint): TelemetryHooks => ({
    onSend: addServerTiming,
    onResponse: async (request, reply) => {
      // A client that left has no response: it was recorded when it left.
      if (request.upstreamCall?.result?.ending !== 'cancelled') record(request, endpoint, reply.statusCode, reply.elapsedTime)
    },
    onRequestAbort: async (request) => {
      const call = request.upstreamCall
      // The client's leaving cancels its call: it ends at once, with its attempts aborted.
      await call?.ended
      const elapsedMs = call === null ? undefined : performance.now() - (call.deadline.at - call.deadline.timeoutMs)
      record(request, endpoint, CLIENT_CLOSED_REQUEST, elapsedMs)
    }
  }))
}, { name: 'telemetry', dependencies: ['metrics'] })
