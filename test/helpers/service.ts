import type { FastifyInstance } from 'fastify'
import { request as httpRequest, type Agent, type IncomingHttpHeaders } from 'node:http'
import type { Test } from 'tap'
import { buildServer } from '../../app.js'
import { loadConfig } from '../../lib/config.js'
import { startScriptedUpstream, type ScriptedUpstream, type UpstreamBehaviour } from './scripted-upstream.js'

export interface RunningService {
  app: FastifyInstance
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string
  /** Every log line written so far, parsed (nothing unless LOG_LEVEL is set: the default is silent). */
  logs: Array<Record<string, unknown>>
}

/** Starts the whole service, as server.ts does, on an ephemeral loopback port, capturing its logs. */
export async function startService (environment: Record<string, string> = {},
  beforeListen?: (app: FastifyInstance) => void): Promise<RunningService> {
  // No drain unless a test asks for one: closing the app at the end of each test would wait SHUTDOWN_DRAIN_MS.
  const config = loadConfig({ LOG_LEVEL: 'silent', SHUTDOWN_DRAIN_MS: '0', ...environment })
  const logs: Array<Record<string, unknown>> = []
  const server = buildServer(config, { write: (line: string) => { logs.push(JSON.parse(line) as Record<string, unknown>) } })
  beforeListen?.(server)
  const url = await server.listen({ port: 0, host: '127.0.0.1' })
  return { app: server, url, logs }
}

/** An upstream a test started (scripted, silent, …): where the service sends its attempts, closed at the end. */
export interface TestUpstream {
  url: string
  close (): Promise<void>
}

export interface ServiceOptions {
  /** The service's environment; UPSTREAM_URL, when given, wins over the upstream's. */
  env?: Record<string, string>
  /** Runs on the app before it listens (extra hooks or routes). */
  beforeListen?: (app: FastifyInstance) => void
}

/** The service, and the upstream it calls: the scripted one started from `script`, or the one given. */
export interface ServiceFixture<U> {
  service: RunningService
  upstream: U
}

/**
 * The service for one test, as startService starts it, pointed (UPSTREAM_URL) at an upstream: a scripted one
 * started from `script`, or `upstream`, started by the test; with neither, wherever `env` says. Both are closed
 * when the test ends, the service first, so that it has let go of its upstream connections when the upstream closes.
 */
export async function withService (t: Test, options: ServiceOptions & { script: (n: number) => UpstreamBehaviour }): Promise<ServiceFixture<ScriptedUpstream>>
export async function withService<U extends TestUpstream> (t: Test, options: ServiceOptions & { upstream: U }): Promise<ServiceFixture<U>>
export async function withService (t: Test, options?: ServiceOptions): Promise<ServiceFixture<undefined>>
export async function withService (t: Test,
  options: ServiceOptions & { script?: (n: number) => UpstreamBehaviour, upstream?: TestUpstream } = {}): Promise<ServiceFixture<TestUpstream | undefined>> {
  const upstream = options.script === undefined ? options.upstream : await startScriptedUpstream(options.script)
  // Teardowns run last registered first: this one after the service's.
  if (upstream !== undefined) t.teardown(() => upstream.close())
  const service = await startService({ ...(upstream === undefined ? {} : { UPSTREAM_URL: upstream.url }), ...options.env },
    options.beforeListen)
  t.teardown(() => service.app.close())
  return { service, upstream }
}

export interface ClientAnswer {
  status: number
  headers: IncomingHttpHeaders
  text: string
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: Record<string, unknown> | undefined
  /** Real time from sending the request to the end of the answer, in ms. */
  elapsedMs: number
}

function parseJson (text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text) as Record<string, unknown>
  } catch {
    return undefined
  }
}

/** One request, over a fresh connection unless an agent is given, timed from the first byte sent. */
export function call (url: string,
  init: { method?: string, headers?: Record<string, string>, agent?: Agent } = {}): Promise<ClientAnswer> {
  return new Promise((resolve, reject) => {
    const startedAt = performance.now()
    const req = httpRequest(url, { method: init.method ?? 'GET', headers: init.headers, agent: init.agent ?? false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text,
          json: parseJson(text),
          elapsedMs: performance.now() - startedAt
        })
      })
    })
    req.on('error', reject)
    req.end()
  })
}
