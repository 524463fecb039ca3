import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { connect, type Socket } from 'node:net'
import { fileURLToPath } from 'node:url'
import { DEFAULT_SIMULATOR_HOST, DEFAULT_SIMULATOR_PORT, parseSimulatorEnv } from '../../simulator/env.js'
import { DEFAULT_SEED, startSimulator } from '../../simulator/simulator.js'

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

/** Generous: the child compiles TypeScript on the fly, and CI machines are small. */
const CHILD_START_TIMEOUT_MS = 20_000

t.test('parseSimulatorEnv', async (t) => {
  t.test('defaults when nothing, or an empty value, is set', async (t) => {
    const defaults = { host: DEFAULT_SIMULATOR_HOST, port: DEFAULT_SIMULATOR_PORT, seed: DEFAULT_SEED, profile: 'exponea' }
    t.same(parseSimulatorEnv({}), defaults)
    t.same(parseSimulatorEnv({ SIMULATOR_HOST: '', SIMULATOR_PORT: '', SIMULATOR_SEED: '', SIMULATOR_PROFILE: '' }), defaults)
    t.same(defaults, { host: '127.0.0.1', port: 8081, seed: DEFAULT_SEED, profile: 'exponea' })
  })

  t.test('reads every variable', async (t) => {
    t.same(
      parseSimulatorEnv({ SIMULATOR_HOST: '0.0.0.0', SIMULATOR_PORT: '9000', SIMULATOR_SEED: '4294967295', SIMULATOR_PROFILE: 'slow' }),
      { host: '0.0.0.0', port: 9000, seed: 4294967295, profile: 'slow' }
    )
    t.same(parseSimulatorEnv({ SIMULATOR_PORT: '0', SIMULATOR_SEED: '0' }), { host: '127.0.0.1', port: 0, seed: 0, profile: 'exponea' })
    for (const profile of ['exponea', 'slow', 'fast', 'overloaded']) t.equal(parseSimulatorEnv({ SIMULATOR_PROFILE: profile }).profile, profile)
  })

  t.test('refuses invalid values with a message naming the variable and the value', async (t) => {
    const invalid: Array<[string, string]> = [
      ['SIMULATOR_PORT', 'abc'],
      ['SIMULATOR_PORT', '-1'],
      ['SIMULATOR_PORT', '65536'],
      ['SIMULATOR_PORT', '80.5'],
      ['SIMULATOR_PORT', ' 80'],
      ['SIMULATOR_PORT', '0x50'],
      ['SIMULATOR_SEED', 'seven'],
      ['SIMULATOR_SEED', '-1'],
      ['SIMULATOR_SEED', '4294967296'],
      ['SIMULATOR_SEED', '1e3'],
      ['SIMULATOR_HOST', 'local host'],
      ['SIMULATOR_PROFILE', 'sluggish']
    ]
    for (const [name, value] of invalid) {
      t.throws(
        () => parseSimulatorEnv({ [name]: value }),
        { message: `${name} must be` },
        `${name}=${JSON.stringify(value)}`
      )
      t.throws(() => parseSimulatorEnv({ [name]: value }), { message: JSON.stringify(value) })
    }
  })
})

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

interface Child {
  process: ChildProcess
  /** The first line the child prints to stdout. */
  firstLine: Promise<string>
  exit: Promise<Exit>
}

/** Runs simulator/main.ts the way a person would, through the same TypeScript loader the tests use. */
function spawnMain (env: Record<string, string>): Child {
  const child = spawn(process.execPath, [...process.execArgv, 'simulator/main.ts'], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => { stderr += chunk })
  const firstLine = new Promise<string>((resolve, reject) => {
    const guard = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`no line from the simulator within ${CHILD_START_TIMEOUT_MS} ms; stderr: ${stderr}`))
    }, CHILD_START_TIMEOUT_MS)
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk
      const newline = stdout.indexOf('\n')
      if (newline >= 0) {
        clearTimeout(guard)
        resolve(stdout.slice(0, newline))
      }
    })
    child.once('exit', () => {
      clearTimeout(guard)
      reject(new Error(`the simulator exited before printing a line; stderr: ${stderr}`))
    })
  })
  // Only awaited by some tests; the others look at `exit` instead.
  firstLine.catch(() => {})
  const exit = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
    stdout,
    stderr
  }))
  return { process: child, firstLine, exit }
}

function connectTo (url: string): Promise<Socket> {
  const { hostname, port } = new URL(url)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => resolve(socket))
    socket.once('error', reject)
  })
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`the process serves until ${signal}, then closes and exits 0`, async (t) => {
    const child = spawnMain({ SIMULATOR_HOST: '127.0.0.1', SIMULATOR_PORT: '0', SIMULATOR_SEED: '42' })
    t.teardown(() => { child.process.kill('SIGKILL') })
    const line = await child.firstLine
    const match = /^simulator listening on (http:\/\/127\.0\.0\.1:\d+\/) \(seed 42, profile exponea\)$/.exec(line)
    t.ok(match, `listening line: ${line}`)
    const url = (match as RegExpExecArray)[1] as string

    const health = await fetch(`${url}health`)
    t.equal(health.status, 200)
    t.same(await health.json(), { status: 'ok' })
    // Seed 42 starts with a success; the body is the upstream's `{"time": <ms>}`.
    const work = await fetch(url, { signal: AbortSignal.timeout(5000) })
    t.equal(work.status, 200)
    t.match(await work.json(), { time: Number })

    // An open, idle connection must not keep the process from stopping.
    const idle = await connectTo(url)
    t.teardown(() => { idle.destroy() })
    const stopping = performance.now()
    child.process.kill(signal)
    const exit = await child.exit
    t.match(exit, { code: 0, signal: null })
    t.equal(exit.stderr, '')
    t.ok(performance.now() - stopping < 5000, 'it stops promptly')
  })
}

t.test('SIMULATOR_PROFILE picks the profile; work given up at a caller\'s deadline is logged on stdout', async (t) => {
  const child = spawnMain({ SIMULATOR_PORT: '0', SIMULATOR_PROFILE: 'slow' })
  t.teardown(() => { child.process.kill('SIGKILL') })
  const line = await child.firstLine
  const match = /^simulator listening on (http:\/\/127\.0\.0\.1:\d+\/) \(seed 42, profile slow\)$/.exec(line)
  t.ok(match, `listening line: ${line}`)
  // The slow profile's shortest delay is 200 ms: a 5 ms deadline is always given up.
  const work = await fetch((match as RegExpExecArray)[1] as string, { headers: { 'x-timeout-ms': '5', 'x-request-id': 'r-1', 'x-attempt': '1' } })
  t.equal(work.status, 504)
  child.process.kill('SIGTERM')
  const exit = await child.exit
  t.equal(exit.code, 0)
  t.match(exit.stdout, "\ngave up at the caller's deadline: x-timeout-ms 5, x-request-id r-1, x-attempt 1\n")
})

t.test('SIMULATOR_PORT=abc: a message naming the variable on stderr, exit code 1', async (t) => {
  const child = spawnMain({ SIMULATOR_PORT: 'abc' })
  t.teardown(() => { child.process.kill('SIGKILL') })
  const exit = await child.exit
  t.equal(exit.code, 1)
  t.match(exit.stderr, /^simulator: SIMULATOR_PORT must be an integer in decimal digits \(got "abc"\)\n$/)
  t.equal(exit.stdout, '')
})

t.test('a port already in use: the listen error on stderr, exit code 1', async (t) => {
  const occupant = await startSimulator()
  t.teardown(() => occupant.close())
  const child = spawnMain({ SIMULATOR_HOST: '127.0.0.1', SIMULATOR_PORT: new URL(occupant.url).port })
  t.teardown(() => { child.process.kill('SIGKILL') })
  const exit = await child.exit
  t.equal(exit.code, 1)
  t.match(exit.stderr, /^simulator: .*EADDRINUSE/)
})
