import { Type, type Static, type TSchema } from '@sinclair/typebox'
import type { FastifySchemaValidationError } from 'fastify'
import { TIMEOUT_HEADER } from '../../lib/constants.js'

/** What a client can get wrong about a time budget, in words naming where it gave it. */
export interface BudgetMessages {
  notInteger: string
  notPositive: string
  tooLarge: (maxTimeoutMs: number) => string
}

/** The `timeout` parameter: the reference design's wording for the first two; the others name their problem as plainly. */
export const TIMEOUT_MESSAGES: BudgetMessages & { repeated: string } = {
  notInteger: 'Timeout has to be integer value.',
  notPositive: 'Timeout has to be positive non zero value.',
  tooLarge: (maxTimeoutMs: number) => `Timeout has to be at most ${maxTimeoutMs} milliseconds.`,
  repeated: 'Timeout has to be given only once.'
}

/** The deadline protocol's header (SPEC §2): the same rules as `timeout`, and messages that name the header. */
export const TIMEOUT_HEADER_MESSAGES: BudgetMessages = {
  notInteger: `Header ${TIMEOUT_HEADER} has to be integer value.`,
  notPositive: `Header ${TIMEOUT_HEADER} has to be positive non zero value.`,
  tooLarge: (maxTimeoutMs: number) => `Header ${TIMEOUT_HEADER} has to be at most ${maxTimeoutMs} milliseconds.`
}

/**
 * A time budget in milliseconds stays a string so Ajv cannot coerce "1e3", " 10" or "0x10" into numbers. Each
 * invalid value fails exactly one keyword, which picks its message:
 *   type           an array: the query parameter was repeated
 *   pattern        not an optionally signed run of decimal digits (a repeated header too: Node joins its values
 *                  with ", ")
 *   not            negative or zero
 *   decimalMaximum above MAX_TIMEOUT_MS
 */
function timeBudget (maxTimeoutMs: number, description: string) {
  return Type.Optional(Type.String({
    description,
    pattern: '^-?[0-9]+$',
    not: { pattern: '^(-[0-9]+|0+)$' },
    decimalMaximum: maxTimeoutMs,
    examples: ['1000']
  }))
}

export function apiQuerySchema (maxTimeoutMs: number) {
  return Type.Object({
    timeout: timeBudget(maxTimeoutMs, `Time budget in milliseconds, 1 to ${maxTimeoutMs}; without it the service waits ` +
      `for the answer, up to ${maxTimeoutMs} ms.`)
  })
}

export function apiHeadersSchema (maxTimeoutMs: number) {
  return Type.Object({
    [TIMEOUT_HEADER]: timeBudget(maxTimeoutMs, `A caller's own deadline, propagated: the milliseconds it will still wait, 1 to ${maxTimeoutMs}. ` +
      'The deadline is the earlier of it and `timeout`.')
  })
}

export type ApiQuery = Static<ReturnType<typeof apiQuerySchema>>
export type ApiHeaders = Static<ReturnType<typeof apiHeadersSchema>>

/** Turns the failing keyword into the message a client can act on. */
export function timeBudgetErrorMessage (errors: FastifySchemaValidationError[], messages: BudgetMessages, maxTimeoutMs: number): string {
  switch (errors[0]?.keyword) {
    case 'type': return TIMEOUT_MESSAGES.repeated // only a query parameter can arrive as an array
    case 'not': return messages.notPositive
    case 'decimalMaximum': return messages.tooLarge(maxTimeoutMs)
    default: return messages.notInteger
  }
}

function errorResponse (statusCode: number, error: string, description: string, message: string) {
  return Type.Object({
    success: Type.Literal(false),
    statusCode: Type.Literal(statusCode),
    error: Type.Literal(error),
    message: Type.String({ description: 'What went wrong, in words.' })
  }, { description, examples: [{ success: false, statusCode, error, message }] })
}

/**
 * The upstream's JSON text, already validated by parsing it. It is written into the answer as it came,
 * byte for byte, instead of being turned into objects and serialised again.
 */
export class RawJson {
  constructor (readonly text: string) {}
}

/** A 200 of /api/smart and /api/first: one upstream answer. */
export interface OneAnswer { success: true, response: RawJson }
/** A 200 of /api/all and /api/within-timeout: a list of upstream answers. */
export interface ListAnswer { success: true, response: RawJson[] }
export type ApiSuccess = OneAnswer | ListAnswer

function rawJsonText (response: RawJson | RawJson[]): string {
  return Array.isArray(response) ? `[${response.map((answer) => answer.text).join(',')}]` : response.text
}

/** Writes a 200 around the upstream's JSON text; other statuses use plain JSON.stringify. */
export function serializeApiAnswer ({ httpStatus }: { httpStatus?: string }): (data: ApiSuccess) => string {
  return httpStatus === '200'
    ? (data) => `{"success":true,"response":${rawJsonText(data.response)}}`
    : (data) => JSON.stringify(data)
}

const errorResponses = (maxTimeoutMs: number) => ({
  400: errorResponse(400, 'Bad Request',
    `\`timeout\` (or the \`${TIMEOUT_HEADER}\` header) is not an integer, not positive, above ${maxTimeoutMs} or repeated; no upstream request was made.`,
    TIMEOUT_MESSAGES.notInteger),
  503: errorResponse(503, 'Service Unavailable',
    'The service is overloaded or shutting down; retry after the seconds in the Retry-After header.',
    'The service is shutting down; retry on another instance.')
})

const REQUEST_TIMEOUT = (description: string) => errorResponse(408, 'Request Timeout', description,
  'No successful upstream answer within the 1000 ms timeout.')
const BAD_GATEWAY = (description: string) => errorResponse(502, 'Bad Gateway', description,
  'Every upstream attempt failed: status 500; ECONNRESET; body is not JSON.')
const ONE_ANSWER = Type.Unsafe<RawJson>({ description: "The upstream's JSON answer, byte for byte." })

/** A 200 around one upstream answer or a list of them. */
function success<Response extends TSchema> (response: Response, description: string, example: unknown) {
  return Type.Object({ success: Type.Literal(true), response }, { description, examples: [{ success: true, response: example }] })
}

/** The answers of /api/smart and /api/first: the first success, 408 or 502. */
export function firstSuccessResponses (maxTimeoutMs: number) {
  return {
    200: success(ONE_ANSWER, 'An upstream attempt succeeded (HTTP 200 with a JSON body); the first success wins.', { time: 324 }),
    ...errorResponses(maxTimeoutMs),
    408: REQUEST_TIMEOUT('The timeout (or MAX_TIMEOUT_MS without one) passed before any attempt succeeded; every attempt was aborted.'),
    502: BAD_GATEWAY('Every attempt failed before the deadline (non-200 status, invalid JSON, body too large, connection error).')
  }
}

/** The answers of /api/all: every success once every attempt has ended, 408 or 502. */
export function allResponses (maxTimeoutMs: number) {
  return {
    200: success(Type.Array(ONE_ANSWER), 'Every attempt has ended and at least one succeeded: the successes, in the order they arrived.',
      [{ time: 112 }, { time: 324 }]),
    ...errorResponses(maxTimeoutMs),
    408: REQUEST_TIMEOUT('The timeout (or MAX_TIMEOUT_MS without one) passed before every attempt had ended; every attempt still running was aborted.'),
    502: BAD_GATEWAY('Every attempt failed.')
  }
}

/** The answers of /api/within-timeout: the successes by the deadline, never 408 or 502. */
export function withinTimeoutResponses (maxTimeoutMs: number) {
  return {
    200: success(Type.Array(ONE_ANSWER), 'The successes that arrived before the deadline, in the order they arrived, sent at the ' +
      'deadline or as soon as every attempt has ended; `[]` when there are none.', [{ time: 112 }]),
    ...errorResponses(maxTimeoutMs)
  }
}
