/**
 * The HTTP servers under test, each in its own process: the built service (`node dist/server.js`) and the
 * yardsticks it is compared with, the minimal got proxy and the bare hedging route (node:http or got client).
 */
import { once } from 'node:events'
import { request } from 'node:http'
import { join } from 'node:path'
import { freePort } from '../test/helpers/free-port.js'
import { BENCH_DIR, compiledEntry, spawnNode, waitUntilServing, type StartedProcess } from './processes.js'

export interface ServerUnderTest {
  /** e.g. 'http://127.0.0.1:40123' (no trailing slash). */
  readonly origin: string
  readonly pid: number
  stop (): Promise<void>
}

/** GET /api/smart with the given timeout, on the service or on a yardstick. */
export function smartUrl (server: ServerUnderTest, timeoutMs: number): URL {
  return new URL(`/api/smart?timeout=${timeoutMs}`, server.origin)
}

/** The service as started with `garbageCollection`: it can be asked for a full GC. */
export interface CollectableService extends ServerUnderTest {
  /** Runs a full garbage collection in the service, then returns its process.memoryUsage(). */
  collectGarbage (): Promise<NodeJS.MemoryUsage>
}

export interface ServiceOptions {
  upstreamUrl: string
  /** Overrides of the service's environment, e.g. { HEDGE_REQUESTS: '0' }. */
  env?: Record<string, string>
  /** When set, the service writes a V8 CPU profile into this folder (under bench/profiles/) on exit. */
  profileName?: string
}

/**
 * Node's arguments that let the bench trigger a full GC in the service over its IPC channel: any message makes
 * it collect and answer with its memory usage. Nothing else in the service changes.
 */
const COLLECT_GARBAGE_ON_MESSAGE = [
  '--expose-gc',
  '--import=data:text/javascript,process.on("message",()=>{globalThis.gc();process.send(process.memoryUsage())})'
]

/**
 * No drain at stop(): no balancer is in front of the bench's service, and every run would wait for it. Requests still
 * running at stop() get SHUTDOWN_GRACE_MS; the bench waits for its own requests first anyway.
 */
const SHUTDOWN_DRAIN_MS = '0'
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

function serviceProcess (options: ServiceOptions, port: number, extraNodeArgs: string[], ipc: boolean): StartedProcess {
  const profiling = options.profileName === undefined
    ? []
    : ['--cpu-prof', `--cpu-prof-dir=${join(BENCH_DIR, 'profiles', options.profileName)}`]
  return spawnNode({
    nodeArgs: [...profiling, ...extraNodeArgs, 'dist/server.js'],
    env: {
      PORT: String(port),
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      UPSTREAM_URL: options.upstreamUrl,
      SHUTDOWN_DRAIN_MS,
      SHUTDOWN_GRACE_MS,
      ...options.env
    },
    ipc
  })
}

export async function startService (options: ServiceOptions): Promise<ServerUnderTest> {
  const port = await freePort()
  return serve(serviceProcess(options, port, [], false), `http://127.0.0.1:${port}`, '/health')
}

/** The service with an IPC channel over which the bench can have it collect its garbage (memory scenario). */
export async function startCollectableService (options: ServiceOptions): Promise<CollectableService> {
  const port = await freePort()
  const started = serviceProcess(options, port, COLLECT_GARBAGE_ON_MESSAGE, true)
  const service = await serve(started, `http://127.0.0.1:${port}`, '/health')
  const collectGarbage = async (): Promise<NodeJS.MemoryUsage> => {
    const answer = once(started.child, 'message') as Promise<[NodeJS.MemoryUsage]>
    started.child.send('gc')
    const [usage] = await answer
    return usage
  }
  return { ...service, collectGarbage }
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

/**
 * bench/bare-hedging-route.ts: the service's hedging schedule with nothing else, the yardstick of its cost per
 * call; `client` is its upstream client (UPSTREAM_CLIENT), bare node:http or got.
 */
export async function startBareHedgingRoute (upstreamUrl: string, client: 'node:http' | 'got' = 'node:http'): Promise<ServerUnderTest> {
  const port = await freePort()
  const route = spawnNode({
    nodeArgs: await compiledEntry('bare-hedging-route.ts'),
    env: { PORT: String(port), UPSTREAM_URL: upstreamUrl, UPSTREAM_CLIENT: client }
  })
  return serve(route, `http://127.0.0.1:${port}`, '/health')
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
