/**
 * Child processes of the bench (the service, the yardsticks, the upstreams) and what /proc says about them.
 * Every process under test runs apart from the load generator, so the two never share an event loop.
 */
import { execFile, spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import ts from 'typescript'

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
export const BENCH_DIR = join(REPO_ROOT, 'bench')

/** 5000 requests in flight hold 1 client socket and 3 upstream sockets each: far beyond the usual 1024. */
const WANTED_FILE_LIMIT = 65536

/** How long a stopped child may take to exit on its own before it is killed. */
const STOP_GRACE_MS = 10_000

/** The node executable every child runs on; the load generator stays on the bench's own runtime. */
let nodeUnderTest = process.execPath

/** Set once, before the first child starts (bench/run.ts --node). */
export function setNodeUnderTest (executable: string): void {
  nodeUnderTest = executable
}

export interface StartedProcess {
  readonly pid: number
  readonly child: ChildProcess
  /** SIGTERM, then SIGKILL if it has not exited within a grace period. */
  stop (): Promise<void>
}

export interface SpawnOptions {
  /** Arguments to `node`, e.g. ['--cpu-prof', 'dist/server.js']. */
  nodeArgs: string[]
  env?: Record<string, string>
  /** Open an IPC channel (for the upstream process, which reports its counters over it). */
  ipc?: boolean
}

/** A bash script that raises the open-file limit as far as allowed, then `exec`s its arguments. */
export function raiseFileLimitScript (): string {
  return `ulimit -n ${WANTED_FILE_LIMIT} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`
}

/** At most this many lines of a child's output are passed on; the rest are only counted. */
const MAX_FORWARDED_LINES = 20

/** Passes a child's output on to the bench's stderr, line by line and prefixed, up to MAX_FORWARDED_LINES. */
function forwardLines (stream: Readable | null, prefix: string): void {
  if (stream === null) return
  let forwarded = 0
  let dropped = 0
  createInterface({ input: stream }).on('line', (line) => {
    if (forwarded < MAX_FORWARDED_LINES) {
      forwarded++
      process.stderr.write(`${prefix}${line.slice(0, 2000)}\n`)
    } else {
      dropped++
    }
  }).on('close', () => {
    if (dropped > 0) process.stderr.write(`${prefix}(${dropped} more lines not shown)\n`)
  })
}

/**
 * Starts `node <nodeArgs>` on the node under test, with the open-file limit raised as far as the machine allows.
 * bash `exec`s node, so the pid is node's own and /proc/<pid> describes the process under test.
 */
export function spawnNode (options: SpawnOptions): StartedProcess {
  const stdio: StdioOptions = options.ipc === true ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe']
  const child = spawn('bash', ['-c', raiseFileLimitScript(), 'bash', nodeUnderTest, ...options.nodeArgs], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio
  })
  if (child.pid === undefined) throw new Error(`could not start node ${options.nodeArgs.join(' ')}`)
  // Children run at LOG_LEVEL=warn, so whatever they print is worth seeing, but a flood of it is not.
  forwardLines(child.stdout, `[pid ${child.pid}] `)
  forwardLines(child.stderr, `[pid ${child.pid}] `)
  const exited = once(child, 'exit')
  let stopping: Promise<void> | undefined
  return {
    pid: child.pid,
    child,
    stop () {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return
        child.kill('SIGTERM')
        const killer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
        await exited
        clearTimeout(killer)
      })()
      return stopping
    }
  }
}

/**
 * Node's arguments to run a TypeScript file of the bench as its own process, through tsx. Good for helpers
 * such as the upstreams; not for a server under test, since tsx also turns on source maps for stack traces.
 */
export function typeScriptEntry (file: string): string[] {
  return ['--import', 'tsx', join(BENCH_DIR, file)]
}

/**
 * Node's arguments to run a self-contained TypeScript file of the bench (one that imports only packages) as
 * plain JavaScript, exactly like the service's compiled dist/: no loader, no source maps. The output goes to
 * node_modules/.cache, where linters and git do not look and from where its packages still resolve.
 */
export async function compiledEntry (file: string): Promise<string[]> {
  const source = await readFile(join(BENCH_DIR, file), 'utf8')
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 },
    fileName: file
  })
  const outputDir = join(REPO_ROOT, 'node_modules', '.cache', 'smart-api-requester-bench')
  await mkdir(outputDir, { recursive: true })
  const outputFile = join(outputDir, file.replace(/\.ts$/, '.js'))
  await writeFile(outputFile, outputText)
  return [outputFile]
}

/** Resolves with the status of one GET, or rejects on a connection error. */
function probe (url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Polls `url` until it answers 200, failing early when the process exits. */
export async function waitUntilServing (url: string, started: StartedProcess, timeoutMs = 20_000): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs
  while (Date.now() < giveUpAt) {
    if (started.child.exitCode !== null) throw new Error(`process ${started.pid} exited with ${started.child.exitCode} before serving ${url}`)
    try {
      if (await probe(url) === 200) return
    } catch {
      // not listening yet
    }
    await sleep(50)
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`)
}

export interface ProcessSample {
  fds: number
  rssBytes: number
}

/**
 * Open descriptors and resident memory of a process. Asynchronous on purpose: listing 20 000 descriptors
 * synchronously would stall the load generator's event loop and show up as latency of the service.
 */
export async function sampleProcess (pid: number): Promise<ProcessSample> {
  const [entries, status] = await Promise.all([readdir(`/proc/${pid}/fd`), readFile(`/proc/${pid}/status`, 'utf8')])
  const rssKiB = Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1] ?? Number.NaN)
  return { fds: entries.length, rssBytes: rssKiB * 1024 }
}

/** How long a clock tick of /proc/<pid>/stat is: `getconf CLK_TCK`, asked once (100 on every usual Linux). */
let clockTicksPerSecond: Promise<number> | undefined

function clockTicks (): Promise<number> {
  clockTicksPerSecond ??= promisify(execFile)('getconf', ['CLK_TCK']).then(
    ({ stdout }) => Number(stdout.trim()) || 100,
    () => 100
  )
  return clockTicksPerSecond
}

/**
 * CPU seconds a process has used so far, user and system, all its threads (GC and libuv's pool included):
 * utime and stime, fields 14 and 15 of /proc/<pid>/stat.
 */
export async function cpuSeconds (pid: number): Promise<number> {
  const [stat, ticksPerSecond] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), clockTicks()])
  // Field 2, the command name, is in parentheses and may hold spaces: count from the last ')'. What follows
  // it starts with field 3, so fields 14 and 15 are at 11 and 12.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond
}

/** The soft open-file limit the process actually got (the machine may not allow WANTED_FILE_LIMIT). */
export async function openFileLimit (pid: number): Promise<number> {
  const limits = await readFile(`/proc/${pid}/limits`, 'utf8')
  return Number(/^Max open files\s+(\d+)/m.exec(limits)?.[1] ?? Number.NaN)
}

/**
 * Samples a process every `intervalMs` until stopped and keeps the peak. Samples that fail (the process
 * is gone) are skipped: the peak of what could be seen is still the peak.
 */
export function startPeakSampler (pid: number, intervalMs = 200): { stop (): Promise<ProcessSample> } {
  const peak: ProcessSample = { fds: 0, rssBytes: 0 }
  let sampling: Promise<void> = Promise.resolve()
  const takeSample = (): void => {
    sampling = sampleProcess(pid).then((sample) => {
      peak.fds = Math.max(peak.fds, sample.fds)
      peak.rssBytes = Math.max(peak.rssBytes, sample.rssBytes)
    }, () => {})
  }
  takeSample()
  const timer = setInterval(takeSample, intervalMs)
  return {
    async stop () {
      clearInterval(timer)
      await sampling
      return peak
    }
  }
}
