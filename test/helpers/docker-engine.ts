/**
 * What the container tests need around Docker: the executables (docker, dockerd, docker-compose or
 * `docker compose`), a Docker engine (the one running, or one started here and stopped again), commands run
 * without blocking the event loop, and the containers of a compose project.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/** An executable found on PATH, or at one of the given paths (Debian puts nginx and dockerd in /usr/sbin). */
export function findExecutable (name: string, alsoAt: string[] = []): string | undefined {
  const onPath = (process.env.PATH ?? '').split(delimiter).filter((dir) => dir !== '').map((dir) => join(dir, name))
  return [...onPath, ...alsoAt].find((path) => {
    try {
      accessSync(path, constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** docker-compose (Debian's package, v1) or the Docker CLI plugin (v2), whichever answers. */
export function findCompose (): string[] | undefined {
  for (const command of [['docker-compose'], ['docker', 'compose']]) {
    const probe = spawnSync(command[0] as string, [...command.slice(1), 'version'], { encoding: 'utf8' })
    if (probe.status === 0) return command
  }
  return undefined
}

/** This process's environment with `overrides` set and the variables named in `without` left out. */
export function toolEnv (overrides: Record<string, string> = {}, without: string[] = []): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !without.includes(name)) env[name] = value
  }
  return { ...env, ...overrides }
}

export interface CommandResult {
  /** The exit code; null when the command was killed (for taking longer than its timeout, say). */
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/** Runs a command to its end without blocking the event loop (load clients may be running meanwhile). */
export async function run (command: string, args: string[],
  options: { env?: Record<string, string>, cwd?: string, timeoutMs?: number } = {}): Promise<CommandResult> {
  const startedAt = performance.now()
  const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? toolEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString('utf8') })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  const guard = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
  try {
    const [code, signal] = await once(child, 'close') as [number | null, NodeJS.Signals | null]
    if (signal !== null) stderr += `\n(killed by ${signal})`
    return { code, stdout, stderr, ms: Math.round(performance.now() - startedAt) }
  } catch (error) {
    // spawn itself failed: the command does not exist.
    return { code: null, stdout, stderr: (error as Error).message, ms: Math.round(performance.now() - startedAt) }
  } finally {
    clearTimeout(guard)
  }
}

/** `docker ARGS`, failing with its stderr unless it exits 0. */
export async function docker (args: string[], timeoutMs = 60_000): Promise<string> {
  const result = await run('docker', args, { timeoutMs })
  if (result.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${String(result.code)}: ${result.stderr.trim()}`)
  return result.stdout
}

export interface DockerEngine {
  /** True when dockerd was started here, and stop() stops it; false for an engine that was already running. */
  startedHere: boolean
  /** dockerd's output, when started here. */
  logFile: string | undefined
  /** The last lines of dockerd's output ('' for an engine not started here). */
  logTail (lines?: number): string
  /** Stops dockerd if it was started here (and removes its log unless told to keep it); otherwise does nothing. */
  stop (keepLog?: boolean): Promise<void>
}

const HOW_TO_GET_ONE = 'Install the engine (Debian: `apt-get install docker.io`, as .ci/run does) and run the tests as root, ' +
  'or start an engine before the tests (`dockerd &`).'

function tail (file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

async function engineAnswers (): Promise<CommandResult> {
  return run('docker', ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 20_000 })
}

function exited (child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

/**
 * The Docker engine that answers `docker info`, or one started here when none does: dockerd in the background,
 * its output in a log file of its own, ready once `docker info` answers (at most `startMs`). Throws an Error that
 * says what to install or do when there is no client, no dockerd, or dockerd does not come up.
 */
export async function useDockerEngine (startMs = 60_000): Promise<DockerEngine> {
  if (findExecutable('docker') === undefined) {
    throw new Error(`The Docker client (docker) is not installed. ${HOW_TO_GET_ONE}`)
  }
  const running = await engineAnswers()
  if (running.code === 0) {
    return { startedHere: false, logFile: undefined, logTail: () => '', stop: async () => {} }
  }
  const why = `No Docker engine answers \`docker info\` (${running.stderr.trim().split('\n').at(-1) ?? ''})`
  const dockerd = findExecutable('dockerd', ['/usr/sbin/dockerd', '/usr/bin/dockerd'])
  if (dockerd === undefined) throw new Error(`${why}, and dockerd is not installed. ${HOW_TO_GET_ONE}`)
  if (process.getuid?.() !== 0) throw new Error(`${why}, and dockerd needs root to start. ${HOW_TO_GET_ONE}`)

  const logDir = mkdtempSync(join(tmpdir(), 'smart-api-dockerd-'))
  const logFile = join(logDir, 'dockerd.log')
  const logFd = openSync(logFile, 'a')
  // Its own process group: a Ctrl-C meant for the tests reaches dockerd only through stop(), which lets it shut
  // its containers down in order.
  const child = spawn(dockerd, [], { detached: true, stdio: ['ignore', logFd, logFd] })
  closeSync(logFd)
  child.unref()
  child.once('error', () => {})
  const exitedPromise = once(child, 'exit').then(() => undefined, () => undefined)

  const stop = async (keepLog = false): Promise<void> => {
    if (!exited(child)) {
      // Referenced again, so that this process waits for dockerd's exit instead of ending first.
      child.ref()
      child.kill('SIGTERM')
      let timer: NodeJS.Timeout | undefined
      const gone = await Promise.race([
        exitedPromise.then(() => true),
        new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), 30_000) })
      ])
      // A pending timer would keep this process alive for its full 30 s.
      clearTimeout(timer)
      if (!gone) {
        child.kill('SIGKILL')
        await exitedPromise
      }
    }
    if (!keepLog) rmSync(logDir, { recursive: true, force: true })
  }

  const deadline = performance.now() + startMs
  for (;;) {
    if (exited(child)) {
      throw new Error(`${why}, and dockerd (started here) exited with ${String(child.exitCode ?? child.signalCode)}. ` +
        `${HOW_TO_GET_ONE}\nThe end of its log, ${logFile}:\n${tail(logFile, 30)}`)
    }
    if ((await engineAnswers()).code === 0) break
    if (performance.now() > deadline) {
      await stop(true)
      throw new Error(`${why}, and dockerd (started here) did not answer within ${startMs / 1000} s. ` +
        `${HOW_TO_GET_ONE}\nThe end of its log, ${logFile}:\n${tail(logFile, 30)}`)
    }
    await sleep(250)
  }
  return { startedHere: true, logFile, logTail: (lines = 40) => tail(logFile, lines), stop }
}

/** What `docker inspect` tells about a container, as far as these tests read it. */
export interface ContainerState {
  id: string
  name: string
  service: string
  /** The service and the container's number in it, e.g. `api 2`: shorter than the name, which has the project's. */
  shortName: string
  /** created, running, restarting, exited, … */
  status: string
  exitCode: number
  oomKilled: boolean
  startedAt: string
  /** 'healthy', 'unhealthy' or 'starting' for a container with a health check, otherwise undefined. */
  health: string | undefined
  /** When the latest health check began ('' before the first). */
  lastCheckAt: string
  /** The container's address on each of its networks. */
  addresses: string[]
}

interface InspectOutput {
  Id: string
  Name: string
  Config: { Labels: Record<string, string> | null }
  State: {
    Status: string
    ExitCode: number
    OOMKilled: boolean
    StartedAt: string
    Health?: { Status: string, Log: Array<{ Start: string }> | null }
  }
  NetworkSettings: { Networks: Record<string, { IPAddress: string }> | null }
}

export async function inspectContainers (ids: string[]): Promise<ContainerState[]> {
  if (ids.length === 0) return []
  const parsed = JSON.parse(await docker(['inspect', ...ids])) as InspectOutput[]
  return parsed.map((container) => ({
    id: container.Id,
    name: container.Name.replace(/^\//, ''),
    service: container.Config.Labels?.['com.docker.compose.service'] ?? '',
    shortName: `${container.Config.Labels?.['com.docker.compose.service'] ?? ''} ${container.Config.Labels?.['com.docker.compose.container-number'] ?? ''}`,
    status: container.State.Status,
    exitCode: container.State.ExitCode,
    oomKilled: container.State.OOMKilled,
    startedAt: container.State.StartedAt,
    health: container.State.Health?.Status,
    lastCheckAt: container.State.Health?.Log?.at(-1)?.Start ?? '',
    addresses: Object.values(container.NetworkSettings.Networks ?? {}).map((network) => network.IPAddress)
  }))
}

/** Every container of a compose project, running or not, as compose labels them (v1 and v2 alike). */
export async function projectContainers (project: string): Promise<ContainerState[]> {
  const ids = (await docker(['ps', '--all', '--quiet', '--no-trunc', '--filter', `label=com.docker.compose.project=${project}`]))
    .split('\n').filter((id) => id !== '')
  return (await inspectContainers(ids)).sort((a, b) => a.name.localeCompare(b.name))
}

/** Removes a compose project's containers and networks without its compose file (a run killed half-way). */
export async function removeProject (project: string): Promise<void> {
  const filter = `label=com.docker.compose.project=${project}`
  const containers = (await docker(['ps', '--all', '--quiet', '--filter', filter])).split('\n').filter((id) => id !== '')
  if (containers.length > 0) await docker(['rm', '--force', '--volumes', ...containers], 120_000)
  const networks = (await docker(['network', 'ls', '--quiet', '--filter', filter])).split('\n').filter((id) => id !== '')
  if (networks.length > 0) await docker(['network', 'rm', ...networks])
}

/** The compose projects that have containers on this engine. */
export async function composeProjects (): Promise<string[]> {
  const labels = await docker(['ps', '--all', '--filter', 'label=com.docker.compose.project',
    '--format', '{{.Label "com.docker.compose.project"}}'])
  return [...new Set(labels.split('\n').filter((name) => name !== ''))]
}
