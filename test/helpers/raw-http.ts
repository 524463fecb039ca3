import { connect, type Socket } from 'node:net'
import { once } from 'node:events'

export interface RawResponse { status: number, headers: Record<string, string>, body: string }

/** Splits raw HTTP/1.1 responses read from one keep-alive socket (bodies have a Content-Length). */
export function parseResponses (raw: string): RawResponse[] {
  const responses = []
  let rest = raw
  while (rest.startsWith('HTTP/1.1')) {
    const headEnd = rest.indexOf('\r\n\r\n')
    const [statusLine = '', ...headerLines] = rest.slice(0, headEnd).split('\r\n')
    const headers = Object.fromEntries(headerLines.map((line) => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]
    }))
    const length = Number(headers['content-length'])
    responses.push({ status: Number(statusLine.split(' ')[1]), headers, body: rest.slice(headEnd + 4, headEnd + 4 + length) })
    rest = rest.slice(headEnd + 4 + length)
  }
  return responses
}

/** A raw keep-alive connection: write requests on it, then read every response once the server closes it. */
export interface RawConnection {
  socket: Socket
  get (path: string): void
  /** Resolves when the server (or the test) closes the connection, with the responses received. */
  responses: Promise<RawResponse[]>
}

export async function openConnection (baseUrl: string): Promise<RawConnection> {
  const socket = connect(Number(new URL(baseUrl).port), '127.0.0.1')
  await once(socket, 'connect')
  let raw = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { raw += chunk })
  const responses = once(socket, 'close').then(() => parseResponses(raw))
  return {
    socket,
    get: (path) => socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
    responses
  }
}
