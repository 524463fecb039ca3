/**
 * The scripted upstreams of the scenarios. They run inside bench/upstream-process.ts, never in the load
 * generator's process.
 */
import { subscribe } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http'
import { createServer as createNetServer, type Socket } from 'node:net'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ATTEMPT_HEADER } from '../lib/constants.js'
import { DEFAULT_PROFILE, SIMULATOR_PROFILES, startSimulator, type SimulatorProfileName } from '../simulator/simulator.js'

export type UpstreamKind = 'instant' | 'silent' | 'simulator'

export interface UpstreamCounters {
  /** HTTP requests received (silent: connections accepted, since it never reads a request). */
  requests: number
  /** Sockets open right now (silent only; -1 where not tracked). */
  openSockets: number
  /** Requests that were a call's first attempt (`x-attempt: 1`; simulator only, -1 where not tracked). */
  firstAttempts: number
  /** First attempts answered 503 at once because the upstream was over capacity (simulator only, -1 where not tracked). */
  firstAttemptsShed: number
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
    counters: () => ({ requests, openSockets: -1, firstAttempts: -1, firstAttemptsShed: -1 }),
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
    counters: () => ({ requests: accepted, openSockets: sockets.size, firstAttempts: -1, firstAttemptsShed: -1 }),
    close: async () => {
      for (const socket of sockets) socket.destroy()
      server.close()
    }
  }
}

/**
 * The project's seeded simulator, unchanged, with one of its profiles (SIMULATOR_PROFILE). It does not expose its
 * server, so requests are counted through Node's own HTTP diagnostics channels, which see every request any server
 * of this process gets and every response it finishes.
 */
async function startSimulatedUpstream (profileName: SimulatorProfileName): Promise<RunningUpstream> {
  let requests = 0
  let firstAttempts = 0
  let firstAttemptsShed = 0
  const isFirstAttempt = (request: IncomingMessage): boolean => request.headers[ATTEMPT_HEADER] === '1'
  subscribe('http.server.request.start', (message) => {
    requests++
    if (isFirstAttempt((message as { request: IncomingMessage }).request)) firstAttempts++
  })
  subscribe('http.server.response.finish', (message) => {
    const { request, response } = message as { request: IncomingMessage, response: ServerResponse }
    if (response.statusCode === 503 && isFirstAttempt(request)) firstAttemptsShed++
  })
  const simulator = await startSimulator({ seed: SIMULATOR_SEED, host: '127.0.0.1', profile: SIMULATOR_PROFILES[profileName] })
  return {
    url: simulator.url,
    counters: () => ({ requests, openSockets: -1, firstAttempts, firstAttemptsShed }),
    close: () => simulator.close()
  }
}

export function startUpstreamServer (kind: UpstreamKind, profileName: SimulatorProfileName = 'exponea'): Promise<RunningUpstream> {
  switch (kind) {
    case 'instant': return startInstantUpstream()
    case 'silent': return startSilentUpstream()
    case 'simulator': return startSimulatedUpstream(profileName)
  }
}
