/**
 * The two HTTP servers under test, each in its own process: the built service (`node dist/server.js`) and
 * the minimal got proxy it is compared with.
 */
import { request } from 'node:http'
import { join } from 'node:path'
import { BENCH_DIR, compiledEntry, freePort, spawnNode, waitUntilServing, type StartedProcess } from './processes.js'

export interface ServerUnderTest {
  /** e.g. 'http://127.0.0.1:40123' (no trailing slash). */
  readonly origin: string
  readonly pid: number
  stop (): Promise<void>
}

export interface ServiceOptions {
  upstreamUrl: string
  /** Overrides of the service's environment, e.g. { HEDGE_REQUESTS: '0' }. */
  env?: Record<string, string>
  /** When set, the service writes a V8 CPU profile into this folder (under bench/profiles/) on exit. */
  profileName?: string
}

/** How long requests still running at stop() may take; the bench waits for its own requests first anyway. */
const SHUTDOWN_GRACE_MS = '5000'

async function serve (process: StartedProcess, origin: string, readyPath: string): Promise<ServerUnderTest> {
  try {
    await waitUntilServing(origin + readyPath, process)
  } catch (error) {
    await process.stop()
    throw error
  }
  return { origin, pid: process.pid, stop: () => process.stop() }
}

export async function startService (options: ServiceOptions): Promise<ServerUnderTest> {
  const port = await freePort()
  const profiling = options.profileName === undefined
    ? []
    : ['--cpu-prof', `--cpu-prof-dir=${join(BENCH_DIR, 'profiles', options.profileName)}`]
  const service = spawnNode({
    nodeArgs: [...profiling, 'dist/server.js'],
    env: {
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      UPSTREAM_URL: options.upstreamUrl,
      SHUTDOWN_GRACE_MS,
      ...options.env
    }
  })
  return serve(service, `http://127.0.0.1:${port}`, '/health')
}

/** bench/minimal-got-proxy.ts: the least a got-based proxy can do, the yardstick for the service's overhead. */
export async function startMinimalGotProxy (upstreamUrl: string): Promise<ServerUnderTest> {
  const port = await freePort()
  const proxy = spawnNode({
    nodeArgs: await compiledEntry('minimal-got-proxy.ts'),
    env: { PORT: String(port), UPSTREAM_URL: upstreamUrl }
  })
  // Every path is proxied, so a 200 here also proves the upstream is reachable through it.
  return serve(proxy, `http://127.0.0.1:${port}`, '/')
}

/** The service's /metrics in Prometheus text format. */
export function readMetrics (origin: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(`${origin}/metrics`, { agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/**
 * Sums the samples of one metric whose labels contain every given `name="value"` pair, e.g.
 * metricValue(text, 'smart_upstream_attempts_total', { result: 'connection_error' }).
 */
export function metricValue (metricsText: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of metricsText.split('\n')) {
    if (!line.startsWith(name)) continue
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (match === null || match[1] !== name) continue
    const labelText = match[2] ?? ''
    if (Object.entries(labels).every(([key, value]) => labelText.includes(`${key}="${value}"`))) sum += Number(match[3])
  }
  return sum
}
