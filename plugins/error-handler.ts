import fp from 'fastify-plugin'
import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { ConnectionError, FastifyError, FastifyInstance, FastifyReply } from 'fastify'
import { CLIENT_CLOSED_REQUEST } from '../lib/errors.js'

/** The JSON body of every error this service sends: Fastify's error shape plus `success: false`. */
export interface ErrorBody {
  success: false
  statusCode: number
  error: string
  message: string
}

const NON_STANDARD_STATUS_NAMES: Record<number, string> = { [CLIENT_CLOSED_REQUEST]: 'Client Closed Request' }

export function errorBody (statusCode: number, message: string): ErrorBody {
  const error = STATUS_CODES[statusCode] ?? NON_STANDARD_STATUS_NAMES[statusCode] ?? 'Error'
  return { success: false, statusCode, error, message }
}

/** What a client hears when Node's HTTP parser refuses its request, by the parser's error code. */
function clientErrorAnswer (code: string): { statusCode: number, message: string } {
  switch (code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { statusCode: 408, message: 'The request was not received in time.' }
    case 'HPE_HEADER_OVERFLOW':
      return { statusCode: 431, message: 'The request line and headers are larger than the server accepts.' }
    default:
      return { statusCode: 400, message: `Malformed HTTP request (${code}).` }
  }
}

/**
 * Fastify's `clientErrorHandler` option: a request Node could not even parse (malformed, headers too large,
 * or not received within the request timeout) gets the same JSON error shape as every other error, then
 * the connection closes, since nothing after a broken request can be trusted.
 */
export function clientErrorHandler (this: FastifyInstance, error: ConnectionError, socket: Socket): void {
  this.log.debug({ err: error }, 'client error')
  // A reset connection (ECONNRESET) is already destroyed: nobody is left to answer.
  if (socket.writable) {
    const { statusCode, message } = clientErrorAnswer(error.code)
    const body = errorBody(statusCode, message)
    const text = JSON.stringify(body)
    socket.write(`HTTP/1.1 ${statusCode} ${body.error}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(text)}\r\nConnection: close\r\n\r\n${text}`)
  }
  socket.destroy()
}

function statusOf (error: FastifyError): number {
  if (error.validation !== undefined) return 400
  const { statusCode } = error
  return statusCode !== undefined && statusCode >= 400 && statusCode <= 599 ? statusCode : 500
}

function sendError (reply: FastifyReply, statusCode: number, message: string): FastifyReply {
  return reply.code(statusCode).type('application/json; charset=utf-8').send(errorBody(statusCode, message))
}

/**
 * One place decides how failures look on the wire: validation failures become 400, errors with a status keep it
 * (the deadline's 408 among them), and anything unexpected is a 500, logged at error, that reveals nothing internal.
 * Unknown routes answer a JSON 404 in the same shape.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((error: FastifyError, request, reply) => {
    const statusCode = statusOf(error)
    if (statusCode === 500) {
      // Only a bug gets here: every expected failure (upstream down, overload, shutdown) has its own status.
      request.log.error({ err: error }, 'request failed')
      return sendError(reply, statusCode, 'Internal Server Error')
    }
    return sendError(reply, statusCode, error.message)
  })

  fastify.setNotFoundHandler((request, reply) =>
    sendError(reply, 404, `Route ${request.method}:${request.url} not found`))
}, { name: 'error-handler' })
