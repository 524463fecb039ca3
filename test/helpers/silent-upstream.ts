import { createServer, type Socket } from 'node:net'
import { once } from 'node:events'

/**
 * A plain TCP server on loopback that accepts every connection, reads what it is sent, and never writes a
 * byte back: an upstream whose process is alive but stuck before it could send any HTTP header. With
 * `reply`, it answers each connection's first bytes with that text instead (e.g. something that is not
 * HTTP at all), and then stays silent, the connection left open.
 */
export interface SilentUpstream {
  url: string
  /** Connections accepted so far. */
  connections (): number
  /** Connections the caller has not closed yet. */
  openSockets (): number
  /** Bytes received, over every connection (a request line and headers for each attempt). */
  bytesReceived (): number
  close (): Promise<void>
}

export async function startSilentUpstream ({ reply }: { reply?: string } = {}): Promise<SilentUpstream> {
  const sockets = new Set<Socket>()
  let accepted = 0
  let received = 0
  const server = createServer((socket) => {
    accepted++
    sockets.add(socket)
    let replied = false
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length
      if (reply !== undefined && !replied) socket.write(reply)
      replied = true
    })
    // A reset from the caller is an ordinary way for it to give up; the socket is gone either way.
    socket.on('error', () => {})
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return {
    url: `http://127.0.0.1:${address.port}/work`,
    connections: () => accepted,
    openSockets: () => sockets.size,
    bytesReceived: () => received,
    close: async () => {
      for (const socket of sockets) socket.destroy()
      server.close()
      await once(server, 'close')
    }
  }
}
