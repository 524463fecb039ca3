import { connect, type Socket } from 'node:net'
import { once } from 'node:events'

/** A response as it came over the wire: header names in lower case, a repeated header's values joined with ", ". */
export interface RawResponse { status: number, headers: Record<string, string>, body: string }

const HEAD_END = Buffer.from('\r\n\r\n')

/**
 * Splits the raw HTTP/1.1 responses read from one connection. A response is complete once the bytes its
 * Content-Length declares are in or, without one, once the connection has `closed`; one not complete yet is left out.
 */
export function parseResponses (raw: Buffer, closed = false): RawResponse[] {
  const responses: RawResponse[] = []
  let rest = raw
  while (rest.subarray(0, 8).toString('latin1') === 'HTTP/1.1') {
    const headEnd = rest.indexOf(HEAD_END)
    if (headEnd < 0) break
    const [statusLine = '', ...headerLines] = rest.subarray(0, headEnd).toString('latin1').split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of headerLines) {
      const colon = line.indexOf(':')
      const name = line.slice(0, colon).toLowerCase()
      const value = line.slice(colon + 1).trim()
      headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`
    }
    const bodyStart = headEnd + HEAD_END.length
    const declared = headers['content-length']
    const bodyEnd = declared === undefined ? (closed ? rest.length : Infinity) : bodyStart + Number(declared)
    if (rest.length < bodyEnd) break
    responses.push({ status: Number(statusLine.split(' ')[1]), headers, body: rest.subarray(bodyStart, bodyEnd).toString('utf8') })
    rest = rest.subarray(bodyEnd)
  }
  return responses
}

/** A raw keep-alive connection: write requests on it, read the responses as they come and once it closes. */
export interface RawConnection {
  socket: Socket
  get (path: string): void
  /** The complete responses received so far. */
  received (): RawResponse[]
  /** Every byte received so far, one character each (latin1). */
  raw (): string
  /** Socket errors (a reset shows up here as ECONNRESET). */
  errors: Error[]
  /** Resolves when the server (or the test) closes the connection, with the responses received; never rejects. */
  responses: Promise<RawResponse[]>
  /** performance.now() when the connection closed, once it has. */
  closedAt (): number | undefined
}

export async function openConnection (baseUrl: string): Promise<RawConnection> {
  const socket = connect(Number(new URL(baseUrl).port), '127.0.0.1')
  await once(socket, 'connect')
  let raw = Buffer.alloc(0)
  let closedAt: number | undefined
  const errors: Error[] = []
  socket.on('data', (chunk: Buffer) => { raw = Buffer.concat([raw, chunk]) })
  socket.on('error', (error) => errors.push(error))
  // Not once(socket, 'close'): that rejects on a socket error, which is recorded in `errors` instead.
  const responses = new Promise<RawResponse[]>((resolve) => {
    socket.once('close', () => {
      closedAt = performance.now()
      resolve(parseResponses(raw, true))
    })
  })
  return {
    socket,
    get: (path) => socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
    received: () => parseResponses(raw),
    raw: () => raw.toString('latin1'),
    errors,
    responses,
    closedAt: () => closedAt
  }
}
