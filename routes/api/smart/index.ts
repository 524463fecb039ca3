import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { hedgedCall, type HedgeResult } from '../../../lib/hedging.js'
import { ClientClosedRequestError, DeadlineExceededError } from '../../../lib/errors.js'
import type { AttemptFailure } from '../../../plugins/upstream-client.js'
import { RawJson, serializeSmartAnswer, smartQuerySchema, smartResponseSchemas, timeoutErrorMessage } from './schema.js'

type SmartResult = HedgeResult<string, AttemptFailure>

declare module 'fastify' {
  interface FastifyRequest {
    /** How the hedged call ended, kept for the request's summary log line. */
    hedgeResult: SmartResult | null
  }
}

/** Methods that exist on the server but not on this resource: they get 405, not 404. */
const UNSUPPORTED_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'] as const

/**
 * GET /api/smart?timeout=<ms>: calls the upstream on the hedging schedule and answers with the first
 * success, 408 when the timeout passes first, 502 when every attempt failed before it.
 */
const smartRoute: FastifyPluginAsyncTypebox = async (fastify) => {
  const { MAX_TIMEOUT_MS, HEDGE_DELAY_MS, HEDGE_REQUESTS } = fastify.config
  fastify.decorateRequest('hedgeResult', null)

  fastify.get('/', {
    schema: { querystring: smartQuerySchema(MAX_TIMEOUT_MS), response: smartResponseSchemas(MAX_TIMEOUT_MS) },
    schemaErrorFormatter: (errors) => new Error(timeoutErrorMessage(errors, MAX_TIMEOUT_MS)),
    serializerCompiler: serializeSmartAnswer,
    onResponse: async (request, reply) => logSummary(request.hedgeResult, reply)
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
      // Each attempt's own time limit ends at the deadline too, as a second line of defence.
      startAttempt: (signal) => fastify.upstream.attempt(signal, deadline - performance.now())
    })
    request.hedgeResult = result
    switch (result.kind) {
      case 'success':
        return { success: true as const, response: new RawJson(result.value) }
      case 'deadline':
        throw new DeadlineExceededError(timeoutMs)
      case 'all_failed':
        throw fastify.httpErrors.badGateway(
          `Every upstream attempt failed: ${result.failures.join('; ')}.`
        )
      case 'cancelled':
        throw new ClientClosedRequestError()
    }
  })

  fastify.route({
    method: [...UNSUPPORTED_METHODS],
    url: '/',
    handler: async (request, reply) => {
      reply.header('allow', 'GET, HEAD')
      throw fastify.httpErrors.methodNotAllowed(`${request.method} is not supported on /api/smart; use GET.`)
    }
  })
}

function logSummary (result: SmartResult | null, reply: FastifyReply): void {
  reply.log.info({
    statusCode: reply.statusCode,
    outcome: result?.kind ?? 'invalid',
    attempts: result?.attempts.length ?? 0,
    winner: result?.kind === 'success' ? result.winner : undefined,
    responseTimeMs: Math.round(reply.elapsedTime * 10) / 10
  }, 'smart request')
}

export default smartRoute
