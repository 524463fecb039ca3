import type { FastifyInstance } from 'fastify'
import { request as httpRequest, type Agent, type IncomingHttpHeaders } from 'node:http'
import { buildServer } from '../../app.js'
import { loadConfig } from '../../lib/config.js'

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
