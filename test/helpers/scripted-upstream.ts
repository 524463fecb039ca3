import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { gzipSync } from 'node:zlib'

/** What the scripted upstream does with one request. */
export type UpstreamBehaviour =
  | { kind: 'json', body?: unknown, status?: number, delayMs?: number, contentType?: string, headers?: Record<string, string> }
  | { kind: 'raw', body: string, status?: number, delayMs?: number, contentType?: string }
  | { kind: 'hang' } // accepts the request and never answers
  | { kind: 'reset', afterHeaders?: boolean, delayMs?: number, hard?: boolean } // destroys the connection (hard: with a TCP RST)
  | { kind: 'drip', intervalMs: number, bytes: number } // headers at once, then one byte per interval
  | { kind: 'huge', bytes: number, declareLength: boolean } // streams a body of this many bytes
  | { kind: 'redirect', location: string }
  // A gzip-encoded answer (Content-Encoding: gzip) whose decoded text is `body`; the sent length is declared.
  // mangle: 'plain' sends `body` itself under the gzip label, 'truncated' only the first half of the gzip data.
  | { kind: 'gzip', body: string, status?: number, contentType?: string, mangle?: 'plain' | 'truncated' }

export interface UpstreamRequest {
  /** 1-based arrival order. */
  n: number
  /** Milliseconds since the upstream started. */
  arrivedAt: number
  /** When the exchange ended on the upstream side (answered, or the caller closed it). */
  closedAt?: number
  /** True when the caller went away before the upstream finished its answer. */
  abandoned?: boolean
  /** Body bytes the upstream managed to write before the exchange ended. */
  bytesWritten: number
  /** True when the caller reset the connection (RST) instead of closing it. */
  reset?: boolean
  headers: IncomingMessage['headers']
  /** The request target the upstream was asked for (path and query). */
  url: string
}

export interface ScriptedUpstream {
  url: string
  requests: UpstreamRequest[]
  /** Milliseconds since the upstream started. */
  now (): number
  /**
   * Resolves once every request received so far has ended on the upstream side; rejects, naming how many are
   * still open, if that takes longer than `withinMs`, so a socket the service never closes fails the test
   * with a reason instead of running into the test's time limit.
   */
  allClosed (withinMs?: number): Promise<void>
  openSockets (): number
  close (): Promise<void>
}

/** How long allClosed waits by default: longer than any deadline a test gives the service. */
const ALL_CLOSED_LIMIT_MS = 15_000

/** Compressed bodies by their decoded text: a test's scripted answers repeat, compressing them once is enough. */
const gzipped = new Map<string, Buffer>()

/**
 * The gzip encoding of `body`, as the `gzip` kind sends it. Calling it before the upstream is asked compresses
 * a large body ahead of time, so that its first answer does not stall the test's event loop.
 */
export function gzipOnce (body: string): Buffer {
  let compressed = gzipped.get(body)
  if (compressed === undefined) {
    compressed = gzipSync(body, { level: 9 })
    gzipped.set(body, compressed)
  }
  return compressed
}

/** Waits until the response can take more data, or is gone; leaves no listener behind. */
function drainOrClose (res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

async function perform (behaviour: UpstreamBehaviour, req: IncomingMessage, res: ServerResponse,
  record: UpstreamRequest): Promise<void> {
  const write = (chunk: string | Buffer): boolean => {
    record.bytesWritten += chunk.length
    return res.write(chunk)
  }
  switch (behaviour.kind) {
    case 'json':
    case 'raw': {
      if (behaviour.delayMs !== undefined) await sleep(behaviour.delayMs)
      const body = behaviour.kind === 'json' ? JSON.stringify(behaviour.body ?? { time: 1 }) : behaviour.body
      res.writeHead(behaviour.status ?? 200, { 'content-type': behaviour.contentType ?? 'application/json', ...(behaviour.kind === 'json' ? behaviour.headers : {}) })
      write(body)
      res.end()
      return
    }
    case 'hang':
      return
    case 'reset':
      if (behaviour.delayMs !== undefined) await sleep(behaviour.delayMs)
      if (behaviour.afterHeaders === true) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
        write('{"time":')
        await sleep(10)
      }
      if (behaviour.hard === true) req.socket.resetAndDestroy()
      else req.socket.destroy()
      return
    case 'drip':
      res.writeHead(200, { 'content-type': 'application/json' })
      for (let i = 0; i < behaviour.bytes && !res.destroyed; i++) {
        write(i === 0 ? '[' : '1')
        await sleep(behaviour.intervalMs)
      }
      if (!res.destroyed) res.end(']')
      return
    case 'huge': {
      const headers: Record<string, string> = { 'content-type': 'application/json' }
      if (behaviour.declareLength) headers['content-length'] = String(behaviour.bytes)
      res.writeHead(200, headers)
      const chunk = Buffer.alloc(64 * 1024, 0x31)
      while (record.bytesWritten < behaviour.bytes && !res.destroyed) {
        if (!write(chunk)) await drainOrClose(res)
      }
      if (!res.destroyed) res.end()
      return
    }
    case 'redirect':
      res.writeHead(302, { location: behaviour.location })
      res.end()
      return
    case 'gzip': {
      const compressed = gzipOnce(behaviour.body)
      const sent = behaviour.mangle === 'plain'
        ? Buffer.from(behaviour.body)
        : behaviour.mangle === 'truncated' ? compressed.subarray(0, Math.floor(compressed.length / 2)) : compressed
      res.writeHead(behaviour.status ?? 200, {
        'content-type': behaviour.contentType ?? 'application/json',
        'content-encoding': 'gzip',
        'content-length': String(sent.length)
      })
      write(sent)
      res.end()
    }
  }
}

/**
 * A real HTTP server on loopback whose every answer is scripted by request number, and which records
 * what the service did to it: when each request arrived, and when and how each one ended.
 */
export async function startScriptedUpstream (script: (n: number) => UpstreamBehaviour): Promise<ScriptedUpstream> {
  const startedAt = performance.now()
  const now = (): number => performance.now() - startedAt
  const requests: UpstreamRequest[] = []
  const sockets = new Set<Socket>()
  const closeWaiters = new Set<() => void>()
  const settleWaiters = (): void => {
    if (requests.every((r) => r.closedAt !== undefined)) for (const wake of closeWaiters) wake()
  }

  const server = createServer((req, res) => {
    const record: UpstreamRequest = { n: requests.length + 1, arrivedAt: now(), bytesWritten: 0, headers: req.headers, url: req.url ?? '' }
    requests.push(record)
    const onSocketError = (error: NodeJS.ErrnoException): void => { record.reset = error.code === 'ECONNRESET' }
    req.socket.once('error', onSocketError)
    res.on('close', () => {
      // A keep-alive socket serves many requests: each one listens for errors only while it lasts.
      req.socket.off('error', onSocketError)
      record.closedAt = now()
      record.abandoned = !res.writableFinished
      settleWaiters()
    })
    perform(script(record.n), req, res, record).catch(() => req.socket.destroy())
  })
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')

  return {
    url: `http://127.0.0.1:${address.port}/work`,
    requests,
    now,
    openSockets: () => sockets.size,
    allClosed: (withinMs = ALL_CLOSED_LIMIT_MS) => new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        closeWaiters.delete(wake)
        const open = requests.filter((request) => request.closedAt === undefined).map((request) => request.n)
        reject(new Error(`upstream requests ${open.join(', ')} still open after ${withinMs} ms`))
      }, withinMs)
      const wake = (): void => {
        clearTimeout(timer)
        closeWaiters.delete(wake)
        resolve()
      }
      closeWaiters.add(wake)
      settleWaiters()
    }),
    close: async () => {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    }
  }
}
