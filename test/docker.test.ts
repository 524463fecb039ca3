/**
 * The container setup, checked without a Docker daemon: the compose file must be valid for docker-compose, and
 * the image's own commands (the service's CMD, its HEALTHCHECK, the simulator's compose command and health check)
 * must work when run for real from a build of this repository, with the environment the containers would get.
 */
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { ConfigSchema, loadConfig } from '../lib/config.js'
import { findCompose } from './helpers/docker-engine.js'
import { freePort } from './helpers/free-port.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url))

// Compiling the whole service is part of this file.
t.setTimeout(300_000)

const STARTUP_TIMEOUT_MS = 30_000

interface ComposeService {
  command?: string[]
  environment?: Record<string, string | number>
  depends_on?: Record<string, { condition: string }>
  healthcheck?: { test: string[] }
}

interface ComposeFile {
  services: Record<string, ComposeService>
}

interface ImageCommands {
  /** ENV of the final stage: what every container starts with. */
  env: Record<string, string>
  cmd: string[]
  healthcheck: string[]
}

/** Joins continuation lines and drops comments and blank lines, as Docker reads a Dockerfile. */
function dockerfileInstructions (text: string): string[] {
  const withoutComments = text.split('\n').filter((line) => !/^\s*#/.test(line)).join('\n')
  return withoutComments.replace(/\\\n/g, ' ').split('\n').map((line) => line.trim()).filter((line) => line !== '')
}

/** Only the exec (JSON) form is accepted: the shell form would hide signals from node behind /bin/sh. */
function execForm (instruction: string, line: string): string[] {
  const match = new RegExp(`^${instruction}\\s+(?:--\\S+\\s+)*(?:CMD\\s+)?(\\[.*\\])$`).exec(line)
  if (match === null) throw new Error(`${instruction} is not in exec form: ${line}`)
  return JSON.parse(match[1] as string) as string[]
}

function readImageCommands (): ImageCommands {
  const instructions = dockerfileInstructions(readFileSync(join(repoRoot, 'Dockerfile'), 'utf8'))
  const lastFrom = instructions.findLastIndex((line) => /^FROM\s/.test(line))
  const finalStage = instructions.slice(lastFrom + 1)
  const only = (instruction: string): string => {
    const lines = finalStage.filter((line) => line.startsWith(`${instruction} `))
    if (lines.length !== 1) throw new Error(`expected one ${instruction} in the final stage, found ${lines.length}`)
    return lines[0] as string
  }
  const env: Record<string, string> = {}
  for (const line of finalStage.filter((line) => line.startsWith('ENV '))) {
    for (const pair of line.slice('ENV '.length).trim().split(/\s+/)) {
      const [name, value] = pair.split('=', 2)
      if (value === undefined || /["']/.test(pair)) throw new Error(`unsupported ENV syntax: ${line}`)
      env[name as string] = value
    }
  }
  return { env, cmd: execForm('CMD', only('CMD')), healthcheck: execForm('HEALTHCHECK', only('HEALTHCHECK')) }
}

function readComposeFile (): ComposeFile {
  // `merge`: the file shares the image settings between services with a YAML merge key.
  return parseYaml(readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8'), { merge: true }) as ComposeFile
}

/** What compose does with `${NAME:-default}` when NAME is unset; anything fancier is refused. */
function interpolateDefaults (environment: Record<string, string | number> = {}): Record<string, string> {
  const resolved: Record<string, string> = {}
  for (const [name, value] of Object.entries(environment)) {
    const text = String(value).replace(/\$\{[A-Z0-9_]+:-([^}]*)\}/g, (_, fallback: string) => fallback)
    if (text.includes('$')) throw new Error(`unsupported interpolation in ${name}: ${value}`)
    resolved[name] = text
  }
  return resolved
}

/**
 * A container's environment has only what the image and compose give it, plus PATH so that `npm` and `node`
 * are found. Coverage is measured on the TypeScript sources by the other tests, not on dist/: NODE_V8_COVERAGE
 * is left out, and since tap's process tracker adds its hooks back to every child it spawns, it is told
 * not to record coverage in these.
 */
function containerEnv (...layers: Array<Record<string, string>>): Record<string, string> {
  const base = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', _TAPJS_PROCESSINFO_COVERAGE_: '0' }
  return Object.assign(base, ...layers)
}

/** The image's commands start with `node`; run them with the Node that runs the tests. */
function withThisNode (argv: string[]): [string, string[]] {
  if (argv[0] !== 'node') throw new Error(`expected a node command, got ${argv.join(' ')}`)
  return [process.execPath, argv.slice(1)]
}

interface Finished {
  code: number | null
  signal: NodeJS.Signals | null
  output: string
}

interface Running {
  child: ChildProcess
  /** stdout and stderr so far, for failure messages. */
  output: () => string
  exited: Promise<Finished>
}

function start (argv: string[], env: Record<string, string>): Running {
  const [command, args] = withThisNode(argv)
  const child = spawn(command, args, { cwd: repoRoot, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const collect = (chunk: Buffer): void => { output += chunk.toString('utf8') }
  child.stdout.on('data', collect)
  child.stderr.on('data', collect)
  const exited = once(child, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
    output
  }))
  return { child, output: () => output, exited }
}

async function runToEnd (argv: string[], env: Record<string, string>, timeoutMs = 15_000): Promise<Finished> {
  const running = start(argv, env)
  const guard = setTimeout(() => running.child.kill('SIGKILL'), timeoutMs)
  try {
    return await running.exited
  } finally {
    clearTimeout(guard)
  }
}

async function npmRunBuild (): Promise<Finished> {
  const child = spawn('npm', ['run', 'build'], { cwd: repoRoot, env: containerEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString('utf8') })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString('utf8') })
  const [code, signal] = await once(child, 'exit') as [number | null, NodeJS.Signals | null]
  return { code, signal, output }
}

async function waitForLine (running: Running, pattern: RegExp): Promise<RegExpExecArray> {
  const deadline = performance.now() + STARTUP_TIMEOUT_MS
  for (;;) {
    const match = pattern.exec(running.output())
    if (match !== null) return match
    if (running.child.exitCode !== null || performance.now() > deadline) {
      throw new Error(`no line matching ${pattern} from the child; its output:\n${running.output()}`)
    }
    await sleep(20)
  }
}

function canConnect (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
    socket.once('error', () => resolve(false))
  })
}

async function waitUntilListening (running: Running, port: number): Promise<void> {
  const deadline = performance.now() + STARTUP_TIMEOUT_MS
  while (!(await canConnect(port))) {
    if (running.child.exitCode !== null || performance.now() > deadline) {
      throw new Error(`nothing listens on port ${port}; the child's output:\n${running.output()}`)
    }
    await sleep(50)
  }
}

async function stop (running: Running): Promise<Finished> {
  if (running.child.exitCode === null && running.child.signalCode === null) running.child.kill('SIGTERM')
  return running.exited
}

const compose = findCompose()
const skipCompose = compose === undefined &&
  'neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)'

t.test('docker-compose config accepts the compose file', { skip: skipCompose }, async (t) => {
  if (compose === undefined) return
  const result = spawnSync(compose[0] as string, [...compose.slice(1), 'config'], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 60_000
  })
  t.equal(result.status, 0, `${compose.join(' ')} config succeeds`, { stderr: result.stderr })
  const normalised = parseYaml(result.stdout) as ComposeFile
  t.same(Object.keys(normalised.services).sort(), ['api', 'simulator'])
  const { api, simulator } = normalised.services as { api: ComposeService, simulator: ComposeService }
  t.equal(api.environment?.UPSTREAM_URL, 'http://simulator:8081/')
  t.same(api.depends_on, { simulator: { condition: 'service_healthy' } })
  t.same(simulator.command, ['node', 'dist/simulator/main.js'])
  t.match(simulator.environment, { SIMULATOR_HOST: '0.0.0.0', SIMULATOR_PORT: '8081', SIMULATOR_SEED: /^\d+$/ })
  t.equal(simulator.healthcheck?.test[0], 'CMD')
})

t.test('both compose files pass every setting of the service through, with its default', async (t) => {
  for (const file of ['docker-compose.yml', 'docker-compose.replicas.yml']) {
    const composeFile = parseYaml(readFileSync(join(repoRoot, file), 'utf8'), { merge: true }) as ComposeFile
    const environment = interpolateDefaults((composeFile.services.api as ComposeService).environment)
    t.same(Object.keys(environment).sort(), Object.keys(ConfigSchema.properties).sort(), `${file}: the api service lists every setting`)
    // The defaults written into the file are the service's own, but for the container's address and upstream.
    const container = { HOST: '0.0.0.0', PORT: '8080', UPSTREAM_URL: 'http://simulator:8081/' }
    t.same(loadConfig(environment), loadConfig(container), `${file}: with nothing set in the shell, every setting has the service's default`)
  }
})

t.test('the image\'s exact commands work outside Docker', async (t) => {
  const image = readImageCommands()
  const compose = readComposeFile()
  const api = compose.services.api as ComposeService
  const simulatorService = compose.services.simulator as ComposeService
  t.same(image.cmd, ['node', 'dist/server.js'], 'the image runs the service')
  t.match(image.env, { NODE_ENV: 'production', HOST: '0.0.0.0', PORT: '8080' })
  t.ok(simulatorService.command, 'the simulator service has a command')
  t.equal(simulatorService.healthcheck?.test[0], 'CMD', 'the simulator health check is in exec form')

  const build = await npmRunBuild()
  t.equal(build.code, 0, 'npm run build succeeds', { output: build.output })
  if (build.code !== 0) return

  const simulatorEnv = interpolateDefaults(simulatorService.environment)
  const simulator = start(
    simulatorService.command as string[],
    // Loopback and an ephemeral port instead of the container's 0.0.0.0:8081.
    containerEnv(image.env, simulatorEnv, { SIMULATOR_HOST: '127.0.0.1', SIMULATOR_PORT: '0' })
  )
  t.teardown(() => { simulator.child.kill('SIGKILL') })
  const listening = await waitForLine(simulator, /simulator listening on (http:\/\/127\.0\.0\.1:(\d+)\/) \(seed (\d+), profile [^)]+\)\n/)
  const [simulatorUrl, simulatorPort, seed] = listening.slice(1) as [string, string, string]
  t.equal(seed, simulatorEnv.SIMULATOR_SEED, 'the compose seed is used')

  const simulatorCheck = simulatorService.healthcheck?.test.slice(1) as string[]
  const simulatorHealthy = await runToEnd(simulatorCheck, containerEnv(image.env, simulatorEnv, { SIMULATOR_PORT: simulatorPort }))
  t.equal(simulatorHealthy.code, 0, 'the simulator\'s compose health check passes', { output: simulatorHealthy.output })

  const port = await freePort()
  const service = start(
    image.cmd,
    containerEnv(image.env, interpolateDefaults(api.environment), {
      HOST: '127.0.0.1',
      PORT: String(port),
      UPSTREAM_URL: simulatorUrl
    })
  )
  t.teardown(() => { service.child.kill('SIGKILL') })
  await waitUntilListening(service, port)

  const healthy = await runToEnd(image.healthcheck, containerEnv(image.env, { PORT: String(port) }))
  t.equal(healthy.code, 0, 'the image\'s HEALTHCHECK passes against the running service', { output: healthy.output })
  const nobodyHome = await runToEnd(image.healthcheck, containerEnv(image.env, { PORT: String(await freePort()) }))
  t.equal(nobodyHome.code, 1, 'and fails when nothing answers')

  // The compose seed's first upstream answer is a success, so this does not depend on luck.
  const response = await fetch(`http://127.0.0.1:${port}/api/smart?timeout=5000`)
  t.equal(response.status, 200, 'the service answers /api/smart through the simulator')
  t.match(await response.json(), { success: true, response: { time: Number } })

  const serviceExit = await stop(service)
  t.match(serviceExit, { code: 0, signal: null }, 'the service exits cleanly on SIGTERM')
  const simulatorExit = await stop(simulator)
  t.match(simulatorExit, { code: 0, signal: null }, 'the simulator exits cleanly on SIGTERM')
})
