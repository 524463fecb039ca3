import { httpErrors } from '@fastify/sensible'
import type { TSchema } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyReply } from 'fastify'
import type { Endpoint } from '../../lib/call-policies.js'
import { TIMEOUT_HEADER } from '../../lib/constants.js'
import { ClientClosedRequestError, DeadlineExceededError } from '../../lib/errors.js'
import type { ClientDeadline, UpstreamCallResult } from '../../plugins/upstream-call.js'
import {
  apiHeadersSchema, apiQuerySchema, RawJson, serializeApiAnswer, TIMEOUT_HEADER_MESSAGES, TIMEOUT_MESSAGES, timeBudgetErrorMessage,
  type ApiHeaders, type ApiQuery, type ApiSuccess, type ListAnswer, type OneAnswer
} from './schema.js'

/**
 * What the four endpoints of the API share at the HTTP level: their route, the client's deadline, and how a call's
 * result becomes an answer. (@fastify/autoload loads only index.ts from this folder, since there is one.)
 */

export interface EndpointDefinition {
  endpoint: Endpoint
  /** One line for the OpenAPI document. */
  summary: string
  /** Every answer of the endpoint, for validation of the contract and for the OpenAPI document. */
  responses: (maxTimeoutMs: number) => Record<number, TSchema>
  /** The call's result as the endpoint answers it: a 200's body, or the error to answer with. */
  answer: (result: UpstreamCallResult, deadline: ClientDeadline) => ApiSuccess
}

/**
 * Registers GET on an endpoint's folder: the query string is validated by its schema before the handler runs, then
 * schema → deadline → engine (the endpoint's policy) → the result as HTTP. The telemetry plugin's hooks record it.
 */
export function registerEndpoint (fastify: FastifyInstance, { endpoint, summary, responses, answer }: EndpointDefinition): void {
  const { MAX_TIMEOUT_MS } = fastify.config
  const policy = fastify.callPolicies[endpoint]
  fastify.withTypeProvider<TypeBoxTypeProvider>().get('/', {
    schema: {
      summary,
      tags: ['API'],
      querystring: apiQuerySchema(MAX_TIMEOUT_MS),
      headers: apiHeadersSchema(MAX_TIMEOUT_MS),
      response: responses(MAX_TIMEOUT_MS)
    },
    schemaErrorFormatter: (errors, dataVar) =>
      new Error(timeBudgetErrorMessage(errors, dataVar === 'headers' ? TIMEOUT_HEADER_MESSAGES : TIMEOUT_MESSAGES, MAX_TIMEOUT_MS)),
    serializerCompiler: serializeApiAnswer,
    ...fastify.telemetryHooks(endpoint)
  }, async (request, reply) => {
    const deadline = clientDeadline(request.query, request.headers, reply, MAX_TIMEOUT_MS)
    const result = await fastify.callUpstream(request, policy, deadline)
    return answer(result, deadline)
  })
}

/**
 * The earlier of `timeout` and the caller's propagated `x-timeout-ms` (MAX_TIMEOUT_MS without either), counted from
 * the request's arrival, not from the handler's start.
 */
export function clientDeadline (query: ApiQuery, headers: ApiHeaders, reply: FastifyReply, maxTimeoutMs: number): ClientDeadline {
  const timeoutMs = Math.min(budgetOrCeiling(query.timeout, maxTimeoutMs), budgetOrCeiling(headers[TIMEOUT_HEADER], maxTimeoutMs))
  return { timeoutMs, at: performance.now() - reply.elapsedTime + timeoutMs }
}

/** A validated budget (decimal digits, at most the ceiling), or the ceiling when none was given. */
function budgetOrCeiling (budget: string | undefined, maxTimeoutMs: number): number {
  return budget === undefined ? maxTimeoutMs : Number(budget)
}

/** No answer to give: the deadline passed (408), every attempt failed (502), or the client left (499). */
function failure (result: UpstreamCallResult, deadline: ClientDeadline): Error {
  switch (result.ending) {
    case 'deadline': return DeadlineExceededError.create(deadline.timeoutMs)
    case 'cancelled': return ClientClosedRequestError.create()
    case 'complete': return httpErrors.badGateway(`Every upstream attempt failed: ${result.failures.join('; ')}.`)
  }
}

function successes (result: UpstreamCallResult): ListAnswer {
  return { success: true, response: result.successes.map(({ value }) => new RawJson(value)) }
}

/** /api/smart and /api/first: the first success. */
export function firstSuccessAnswer (result: UpstreamCallResult, deadline: ClientDeadline): OneAnswer {
  const first = result.successes[0]
  if (first === undefined) throw failure(result, deadline)
  return { success: true, response: new RawJson(first.value) }
}

/** /api/all: every success, once every attempt has ended; 502 when none succeeded. */
export function allAnswer (result: UpstreamCallResult, deadline: ClientDeadline): ListAnswer {
  if (result.ending !== 'complete' || result.successes.length === 0) throw failure(result, deadline)
  return successes(result)
}

/** /api/within-timeout: the successes so far, at the deadline or once every attempt has ended. */
export function withinTimeoutAnswer (result: UpstreamCallResult, deadline: ClientDeadline): ListAnswer {
  if (result.ending === 'cancelled') throw failure(result, deadline)
  return successes(result)
}
