import { connect, type Socket } from 'node:net'
import { once } from 'node:events'

export interface RawResponse { status: number, headers: Record<string, string>, body: string }

/**
 * Splits raw HTTP/1.1 responses read from one keep-alive socket (bodies have a Content-Length); a response not
 * complete yet is left out.
 */
export function parseResponses (raw: string): RawResponse[] {
  const responses = []
  let rest = raw
  while (rest.startsWith('HTTP/1.1')) {
    const headEnd = rest.indexOf('\r\n\r\n')
    if (headEnd < 0) break
    const [statusLine = '', ...headerLines] = rest.slice(0, headEnd).split('\r\n')
    const headers = Object.fromEntries(headerLines.map((line) => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]
    }))
    const length = Number(headers['content-length'])
    if (rest.length < headEnd + 4 + length) break
    responses.push({ status: Number(statusLine.split(' ')[1]), headers, body: rest.slice(headEnd + 4, headEnd + 4 + length) })
    rest = rest.slice(headEnd + 4 + length)
  }
  return responses
}

/** A raw keep-alive connection: write requests on it, read the responses as they come and once it closes. */
export interface RawConnection {
  socket: Socket
  get (path: string): void
  /** The complete responses received so far. */
  received (): RawResponse[]
  /** Socket errors (a reset shows up here as ECONNRESET). */
  errors: Error[]
  /** Resolves when the server (or the test) closes the connection, with the responses received. */
  responses: Promise<RawResponse[]>
  /** performance.now() when the connection closed, once it has. */
  closedAt (): number | undefined
}

export async function openConnection (baseUrl: string): Promise<RawConnection> {
  const socket = connect(Number(new URL(baseUrl).port), '127.0.0.1')
  await once(socket, 'connect')
  let raw = ''
  let closedAt: number | undefined
  const errors: Error[] = []
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { raw += chunk })
  socket.on('error', (error) => errors.push(error))
  const responses = once(socket, 'close').then(() => {
    closedAt = performance.now()
    return parseResponses(raw)
  })
  return {
    socket,
    get: (path) => socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
    received: () => parseResponses(raw),
    errors,
    responses,
    closedAt: () => closedAt
  }
}
