/**
 * Runs `create` without capturing a stack trace. For outcomes the service expects and answers through
 * Fastify's error path (a deadline, a client gone): nobody reads their stack, and capturing one is paid by every
 * 408 when many deadlines fall due together (BENCHMARKS.md, "Where the time went").
 */
function withoutStackTrace<T> (create: () => T): T {
  const stackTraceLimit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return create()
  } finally {
    Error.stackTraceLimit = stackTraceLimit
  }
}

/** The client's deadline passed before the call had its answer: 408, which the error handler sends as it is. */
export class DeadlineExceededError extends Error {
  override readonly name = 'DeadlineExceededError'
  readonly statusCode = 408

  constructor (readonly timeoutMs: number) {
    super(`No successful upstream answer within the ${timeoutMs} ms timeout.`)
  }

  static create (timeoutMs: number): DeadlineExceededError {
    return withoutStackTrace(() => new DeadlineExceededError(timeoutMs))
  }
}

/** nginx's status for "the client closed the connection before the answer": logs and metrics use it. */
export const CLIENT_CLOSED_REQUEST = 499

/** The client hung up before the answer was ready: there is nobody left to answer. */
export class ClientClosedRequestError extends Error {
  readonly statusCode = CLIENT_CLOSED_REQUEST

  constructor () {
    super('The client closed the connection before the answer was ready.')
  }

  static create (): ClientClosedRequestError {
    return withoutStackTrace(() => new ClientClosedRequestError())
  }
}
