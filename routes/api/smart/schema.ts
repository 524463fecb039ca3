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
