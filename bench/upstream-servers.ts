/**
 * The scripted upstreams of the scenarios. They run inside bench/upstream-process.ts, never in the load
 * generator's process.
 */
import { subscribe } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type Socket } from 'node:net'
import { DEFAULT_PROFILE, startSimulator } from '../simulator/simulator.js'

export type UpstreamKind = 'instant' | 'silent' | 'simulator'

export interface UpstreamCounters {
  /** HTTP requests received (silent: connections accepted, since it never reads a request). */
  requests: number
  /** Sockets open right now (silent only; -1 where not tracked). */
  openSockets: number
}

export interface RunningUpstream {
  url: string
  counters (): UpstreamCounters
  close (): Promise<void>
}

/** Fixed, so that every run of the hedged-tail scenario sees the same sequence of upstream fates. */
export const SIMULATOR_SEED = 20240601

/** The simulator's profile as the hedged-tail scenario runs it (and as bench/schedule-limit.ts models it). */
export const SIMULATOR_PROFILE = DEFAULT_PROFILE

/** Many connections arrive at once (1000 req/s × 3 attempts, bursts of 5000): a short queue would drop SYNs. */
const LISTEN_BACKLOG = 4096

/** Idle keep-alive connections of the proxies under test must not be closed under them between phases. */
const KEEP_ALIVE_TIMEOUT_MS = 120_000

const INSTANT_BODY = Buffer.from('{"time":1}')

async function listen (server: HttpServer | ReturnType<typeof createNetServer>): Promise<string> {
  server.listen({ port: 0, host: '127.0.0.1', backlog: LISTEN_BACKLOG })
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return `http://127.0.0.1:${address.port}/`
}

/** Answers every request at once with 200 {"time":1}, keeping the connection alive. */
async function startInstantUpstream (): Promise<RunningUpstream> {
  let requests = 0
  const server = createHttpServer((_request, response) => {
    requests++
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': INSTANT_BODY.length })
    response.end(INSTANT_BODY)
  })
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS
  const url = await listen(server)
  return {
    url,
    counters: () => ({ requests, openSockets: -1 }),
    close: async () => {
      server.closeAllConnections()
      server.close()
    }
  }
}

/**
 * Accepts every connection and never answers: the worst upstream for a deadline. A raw TCP server, so
 * no HTTP timeout of Node's own can ever answer or close on its behalf.
 */
async function startSilentUpstream (): Promise<RunningUpstream> {
  let accepted = 0
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    accepted++
    sockets.add(socket)
    socket.resume() // read and discard the request, so the client's writes never back up
    socket.on('error', () => {}) // resets from clients that gave up are expected
    socket.once('close', () => sockets.delete(socket))
  })
  const url = await listen(server)
  return {
    url,
    counters: () => ({ requests: accepted, openSockets: sockets.size }),
    close: async () => {
      for (const socket of sockets) socket.destroy()
      server.close()
    }
  }
}

/**
 * The project's seeded simulator, unchanged. It does not expose its server, so requests are counted
 * through Node's own HTTP diagnostics channel, which sees every request any server of this process gets.
 */
async function startSimulatedUpstream (): Promise<RunningUpstream> {
  let requests = 0
  subscribe('http.server.request.start', () => { requests++ })
  const simulator = await startSimulator({ seed: SIMULATOR_SEED, host: '127.0.0.1', profile: SIMULATOR_PROFILE })
  return { url: simulator.url, counters: () => ({ requests, openSockets: -1 }), close: () => simulator.close() }
}

export function startUpstreamServer (kind: UpstreamKind): Promise<RunningUpstream> {
  switch (kind) {
    case 'instant': return startInstantUpstream()
    case 'silent': return startSilentUpstream()
    case 'simulator': return startSimulatedUpstream()
  }
}
