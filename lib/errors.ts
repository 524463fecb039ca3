/**
 * The deadline passed before any attempt succeeded. Its name is 'TimeoutError', like got's and
 * AbortSignal.timeout()'s errors, so the error handler answers every kind of timeout with 408.
 */
export class DeadlineExceededError extends Error {
  override readonly name = 'TimeoutError'

  constructor (readonly timeoutMs: number) {
    super(`No successful upstream answer within the ${timeoutMs} ms timeout.`)
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
}
