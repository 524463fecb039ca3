import { Type, type Static } from '@sinclair/typebox'
import type { FastifySchemaValidationError } from 'fastify'

/** The reference design's wording for the first two; the others name their problem as plainly. */
export const TIMEOUT_MESSAGES = {
  notInteger: 'Timeout has to be integer value.',
  notPositive: 'Timeout has to be positive non zero value.',
  tooLarge: (maxTimeoutMs: number) => `Timeout has to be at most ${maxTimeoutMs} milliseconds.`,
  repeated: 'Timeout has to be given only once.'
}

/**
 * `timeout` stays a string so Ajv cannot coerce "1e3", " 10" or "0x10" into numbers. Each invalid value
 * fails exactly one keyword, which picks its message:
 *   type           an array: the parameter was repeated
 *   pattern        not an optionally signed run of decimal digits
 *   not            negative or zero
 *   decimalMaximum above MAX_TIMEOUT_MS
 */
export function smartQuerySchema (maxTimeoutMs: number) {
  return Type.Object({
    timeout: Type.Optional(Type.String({
      description: `Time budget in milliseconds, 1 to ${maxTimeoutMs}; without it the service waits ` +
        `for the first success, up to ${maxTimeoutMs} ms.`,
      pattern: '^-?[0-9]+$',
      not: { pattern: '^(-[0-9]+|0+)$' },
      decimalMaximum: maxTimeoutMs,
      examples: ['1000']
    }))
  })
}

export type SmartQuery = Static<ReturnType<typeof smartQuerySchema>>

/** Turns the failing keyword into the message a client can act on. */
export function timeoutErrorMessage (errors: FastifySchemaValidationError[], maxTimeoutMs: number): string {
  switch (errors[0]?.keyword) {
    case 'type': return TIMEOUT_MESSAGES.repeated
    case 'not': return TIMEOUT_MESSAGES.notPositive
    case 'decimalMaximum': return TIMEOUT_MESSAGES.tooLarge(maxTimeoutMs)
    default: return TIMEOUT_MESSAGES.notInteger
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

export interface SmartSuccess {
  success: true
  response: RawJson
}

/** Writes the 200 answer around the upstream's JSON text; other statuses use plain JSON.stringify. */
export function serializeSmartAnswer ({ httpStatus }: { httpStatus?: string }): (data: SmartSuccess) => string {
  return httpStatus === '200'
    ? (data) => `{"success":true,"response":${data.response.text}}`
    : (data) => JSON.stringify(data)
}

/** Every answer of GET /api/smart, for validation of the contract and for the OpenAPI document. */
export function smartResponseSchemas (maxTimeoutMs: number) {
  return {
    200: Type.Object({
      success: Type.Literal(true),
      response: Type.Unsafe<RawJson>({ description: "The upstream's JSON answer, byte for byte." })
    }, {
      description: 'An upstream attempt succeeded (HTTP 200 with a JSON body); the first success wins.',
      examples: [{ success: true, response: { time: 324 } }]
    }),
    400: errorResponse(400, 'Bad Request',
      `\`timeout\` is not an integer, not positive, above ${maxTimeoutMs} or repeated; no upstream request was made.`,
      TIMEOUT_MESSAGES.notInteger),
    408: errorResponse(408, 'Request Timeout',
      'The timeout (or MAX_TIMEOUT_MS without one) passed before any attempt succeeded; every attempt was aborted.',
      'No successful upstream answer within the 1000 ms timeout.'),
    502: errorResponse(502, 'Bad Gateway',
      'Every attempt failed before the deadline (non-200 status, invalid JSON, body too large, connection error).',
      'Every upstream attempt failed: status 500; ECONNRESET; body is not JSON.'),
    503: errorResponse(503, 'Service Unavailable',
      'The service is overloaded or shutting down; retry after the seconds in the Retry-After header.',
      'The service is shutting down; retry on another instance.')
  }
}
