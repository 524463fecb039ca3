/**
 * Scale-out: the service keeps no state between requests, so N replicas behind a load balancer serve like one.
 * Two instances run behind a real nginx (deploy/nginx.conf, as docker-compose.replicas.yml uses it) under
 * continuous load, and are restarted one after the other with SIGTERM, as a rolling deploy does: no client
 * request may fail. What makes that work is the service's shutdown (it stops accepting, answers 503 to requests
 * still arriving on open connections, finishes what is in flight) and nginx's proxy_next_upstream, which sends a
 * refused or 503'd request to the other instance.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { Agent } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { delimiter, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { loadConfig } from '../lib/config.js'
import { startScriptedUpstream } from './helpers/scripted-upstream.js'
import { call } from './helpers/service.js'
import { listeningUrl, runServer, type ServerProcess } from './helpers/server-process.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const nginxTemplate = readFileSync(join(repoRoot, 'deploy', 'nginx.conf'), 'utf8')

/** Concurrent closed-loop clients, each on its own keep-alive connection to nginx. */
const CLIENTS = 20
/** How long the load runs with both instances up: before the first restart, between the two, after the second. */
const STEADY_MS = 1500

/** An executable found on PATH, or at one of the given paths (Debian puts nginx in /usr/sbin). */
function findExecutable (name: string, alsoAt: string[] = []): string | undefined {
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
function findCompose (): string[] | undefined {
  for (const command of [['docker-compose'], ['docker', 'compose']]) {
    const probe = spawnSync(command[0] as string, [...command.slice(1), 'version'], { encoding: 'utf8' })
    if (probe.status === 0) return command
  }
  return undefined
}

/** `proxy_read_timeout 65s;` of deploy/nginx.conf, in milliseconds. */
function proxyReadTimeoutMs (): number {
  const match = /^\s*proxy_read_timeout\s+(\d+)s;/m.exec(nginxTemplate)
  if (match === null) throw new Error('deploy/nginx.conf sets no proxy_read_timeout in seconds')
  return Number(match[1]) * 1000
}

/**
 * A port that is free now and stays free while an instance restarts on it. It is picked below Linux's
 * ephemeral range (32768 and up): a port from that range could be taken, while its instance is down, as the
 * local end of one of nginx's outgoing connections, and the restarted instance could not listen on it.
 */
async function freeFixedPort (taken: number[]): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (taken.includes(port)) continue
    const server = createServer()
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (!bound) continue
    server.close()
    await once(server, 'close')
    return port
  }
  throw new Error('no free port found')
}

/** Replaces the one line `pattern` matches, and fails loudly if deploy/nginx.conf no longer has exactly one. */
function replaceLine (text: string, pattern: RegExp, what: string, replacement: (match: RegExpExecArray) => string): string {
  const all = text.match(new RegExp(pattern.source, 'gm')) ?? []
  const match = new RegExp(pattern.source, 'm').exec(text)
  if (all.length !== 1 || match === null) throw new Error(`deploy/nginx.conf should have one ${what}, found ${all.length}`)
  return text.slice(0, match.index) + replacement(match) + text.slice(match.index + match[0].length)
}

/**
 * deploy/nginx.conf for loopback: the `server api:8080 …;` line becomes one line per local instance with the same
 * parameters, nginx listens on a loopback port, and the access log goes to the test's directory.
 */
function renderSiteConf (instancePorts: number[], listenPort: number, accessLog: string): string {
  let conf = replaceLine(nginxTemplate, /^([ \t]*)server[ \t]+api:8080((?:[ \t]+[^;\n]*)?);[ \t]*$/, '`server api:8080` line',
    ([, indent = '', parameters = '']) => instancePorts.map((port) => `${indent}server 127.0.0.1:${port}${parameters};`).join('\n'))
  conf = replaceLine(conf, /^([ \t]*)listen[ \t]+8080;[ \t]*$/, '`listen 8080;` line',
    ([, indent = '']) => `${indent}listen 127.0.0.1:${listenPort};`)
  conf = replaceLine(conf, /^([ \t]*)access_log[ \t]+\/var\/log\/nginx\/access\.log[ \t]+(\w+);[ \t]*$/, 'access_log line',
    ([, indent = '', format = '']) => `${indent}access_log ${accessLog} ${format};`)
  return conf
}

/** The main configuration around it, as the nginx image's own nginx.conf is, with every path in `dir`. */
function mainConf (dir: string): string {
  return [
    'daemon off;',
    'worker_processes 1;',
    `pid ${join(dir, 'nginx.pid')};`,
    'error_log stderr warn;',
    // nginx started as root would run its worker as `nobody`, which cannot enter the private temp directory.
    ...(process.getuid?.() === 0 ? [`user ${userInfo().username};`] : []),
    'events { worker_connections 1024; }',
    'http {',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `  ${kind}_temp_path ${join(dir, kind)};`),
    `  include ${join(dir, 'smart-api.conf')};`,
    '}',
    ''
  ].join('\n')
}

interface Nginx {
  child: ChildProcess
  output (): string
  exited: Promise<number | null>
}

function startNginx (nginx: string, dir: string): Nginx {
  const child = spawn(nginx, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', 'stderr'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  return { child, output: () => output, exited }
}

/** Polls `url` until it answers 200, or fails the test after `ms`. */
async function until200 (t: Test, url: string, ms: number, what: string, alive: () => boolean): Promise<void> {
  const deadline = performance.now() + ms
  while (performance.now() < deadline && alive()) {
    const answer = await call(url).catch(() => undefined)
    if (answer?.status === 200) return
    await sleep(50)
  }
  t.fail(`${what}: ${url} did not answer 200 within ${ms} ms`)
  throw new Error(`${what} never answered 200`)
}

/** Stops an instance with SIGTERM as an orchestrator does, and waits for it to exit (at most 15 s). */
async function drain (instance: ServerProcess): Promise<{ code: number | null | 'still running', ms: number }> {
  const startedAt = performance.now()
  instance.child.kill('SIGTERM')
  const code = await Promise.race([instance.exited, sleep(15_000, undefined, { ref: false }).then(() => 'still running' as const)])
  return { code, ms: Math.round(performance.now() - startedAt) }
}

function smartRequestsLogged (instance: ServerProcess): number {
  return instance.output().split('"msg":"smart request"').length - 1
}

/** Waits until nginx sends an instance its share of the load: `count` requests served (at most 10 s). */
async function takesTraffic (t: Test, instance: ServerProcess, name: string, count = 5): Promise<void> {
  const deadline = performance.now() + 10_000
  while (smartRequestsLogged(instance) < count) {
    if (performance.now() > deadline) {
      t.fail(`${name} got no traffic from nginx within 10 s`, { output: instance.output().slice(-3000) })
      throw new Error(`${name} got no traffic`)
    }
    await sleep(25)
  }
}

interface ClientAnswer {
  requestId: string
  phase: string
  /** 0: the request failed without an HTTP answer. */
  status: number
  success: boolean
  idEchoed: boolean
  detail: string
}

interface Load {
  phase: string
  stopping: boolean
  sent: number
  answers: ClientAnswer[]
}

/** One closed-loop client: a request, its answer, the next request, until the load stops. */
async function loadClient (base: string, agent: Agent, load: Load): Promise<void> {
  while (!load.stopping) {
    const requestId = `scale-out-${++load.sent}`
    const phase = load.phase
    try {
      const answer = await call(`${base}/api/smart?timeout=2000`, { agent, headers: { 'x-request-id': requestId } })
      load.answers.push({
        requestId,
        phase,
        status: answer.status,
        success: answer.json?.success === true,
        idEchoed: answer.headers['x-request-id'] === requestId,
        detail: answer.status === 200 ? '' : answer.text.slice(0, 200)
      })
    } catch (error) {
      load.answers.push({ requestId, phase, status: 0, success: false, idEchoed: false, detail: (error as Error).message })
    }
  }
}

function countBy<T> (items: T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1
  return counts
}

t.test('deploy/nginx.conf retries only what no instance worked on, and waits longer than any request', async (t) => {
  const retryOn = /^\s*proxy_next_upstream\s+([^;]+);/m.exec(nginxTemplate)?.[1]?.split(/\s+/) ?? []
  t.ok(retryOn.includes('error') && retryOn.includes('http_503'), 'refused connections and draining 503s go to the next instance', { retryOn })
  t.notOk(retryOn.some((condition) => /^http_(500|502|504|429|40\d)$/.test(condition) || condition === 'non_idempotent'),
    'an answer the service worked for (its 502, a 504) is never replayed', { retryOn })
  const maxTimeoutMs = loadConfig({}).MAX_TIMEOUT_MS
  t.ok(proxyReadTimeoutMs() > maxTimeoutMs, `proxy_read_timeout (${proxyReadTimeoutMs()} ms) exceeds MAX_TIMEOUT_MS (${maxTimeoutMs} ms)`)
  t.match(nginxTemplate, /^\s*proxy_set_header\s+X-Request-Id\s+\$smart_request_id;/m, 'the request id is passed to the instances')
  t.match(nginxTemplate, /^\s*keepalive\s+\d+;/m, 'keep-alive connections to the instances')
  t.match(nginxTemplate, /^\s*proxy_set_header\s+Connection\s+"";/m, 'no "Connection: close" towards the instances')
})

const compose = findCompose()
const skipCompose = compose === undefined &&
  'neither docker-compose nor `docker compose` is installed (apt-get install docker-compose)'

t.test('docker-compose config accepts docker-compose.replicas.yml', { skip: skipCompose }, async (t) => {
  if (compose === undefined) return
  const result = spawnSync(compose[0] as string, [...compose.slice(1), '-f', 'docker-compose.replicas.yml', 'config'], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 60_000
  })
  t.equal(result.status, 0, `${compose.join(' ')} -f docker-compose.replicas.yml config succeeds`, { stderr: result.stderr })
  if (result.status !== 0) return

  interface Service {
    environment?: Record<string, string>
    deploy?: { replicas?: number }
    ports?: unknown
    volumes?: unknown
    depends_on?: Record<string, { condition: string }>
    stop_grace_period?: string
  }
  const { services } = parseYaml(result.stdout) as { services: Record<string, Service> }
  t.same(Object.keys(services).sort(), ['api', 'nginx', 'simulator'])
  const { api, nginx } = services as { api: Service, nginx: Service }
  t.ok((api.deploy?.replicas ?? 1) >= 2, 'several replicas of the service', { deploy: api.deploy })
  t.equal(api.ports, undefined, 'the replicas publish no port: clients come through nginx')
  t.match(api.environment, { HOST: '0.0.0.0', PORT: '8080', UPSTREAM_URL: 'http://simulator:8081/' })
  t.match(nginxTemplate, /^\s*server\s+api:8080\s/m, 'nginx balances over the `api` replicas on their port')
  t.ok(Number(api.environment?.MAX_TIMEOUT_MS) < proxyReadTimeoutMs(), 'nginx waits longer than the longest request')
  const graceSeconds = Number(/^(\d+)s$/.exec(api.stop_grace_period ?? '')?.[1])
  t.ok(graceSeconds * 1000 > Number(api.environment?.SHUTDOWN_GRACE_MS),
    'Docker waits longer than SHUTDOWN_GRACE_MS before killing a stopping replica', { stop_grace_period: api.stop_grace_period })
  t.match(JSON.stringify(nginx.volumes), /deploy\/nginx\.conf.*\/etc\/nginx\/conf\.d\/default\.conf/, 'nginx runs deploy/nginx.conf')
  t.match(JSON.stringify(nginx.ports), /8080/, 'nginx publishes the service port')
  t.same(nginx.depends_on, { api: { condition: 'service_healthy' } })
})

const nginxBinary = findExecutable('nginx', ['/usr/sbin/nginx'])
const skipNginx = nginxBinary === undefined && 'nginx is not installed (apt-get install nginx; .ci/run installs it)'

t.test('two instances behind nginx: a rolling restart under load fails no request', { skip: skipNginx }, async (t) => {
  if (nginxBinary === undefined) return
  t.setTimeout(90_000)
  const testStartedAt = performance.now()

  // 200 {"time": …} after 20–80 ms: quick, always successful, so every answer should be a 200.
  const upstream = await startScriptedUpstream((n) => {
    const delayMs = 20 + ((n * 37) % 61)
    return { kind: 'json', body: { time: delayMs }, delayMs }
  })
  t.teardown(() => upstream.close())

  const dir = mkdtempSync(join(tmpdir(), 'smart-api-scale-out-'))
  const instances: ServerProcess[] = []
  const running: { nginx?: Nginx } = {}
  const agent = new Agent({ keepAlive: true, maxSockets: CLIENTS })
  const load: Load = { phase: 'both up', stopping: false, sent: 0, answers: [] }
  t.teardown(async () => {
    // Also when an assertion threw half-way: the clients stop, and every process started here ends.
    load.stopping = true
    agent.destroy()
    for (const instance of instances) {
      if (instance.child.exitCode === null && instance.child.signalCode === null) instance.child.kill('SIGKILL')
    }
    const { nginx } = running
    if (nginx !== undefined && nginx.child.exitCode === null && nginx.child.signalCode === null) {
      nginx.child.kill('SIGTERM')
      await Promise.race([nginx.exited, sleep(5000, undefined, { ref: false }).then(() => nginx.child.kill('SIGKILL'))])
    }
    rmSync(dir, { recursive: true, force: true })
  })

  const portA = await freeFixedPort([])
  const portB = await freeFixedPort([portA])
  const nginxPort = await freeFixedPort([portA, portB])
  const start = (port: number): ServerProcess => {
    const instance = runServer({
      UPSTREAM_URL: upstream.url,
      PORT: String(port),
      LOG_LEVEL: 'info',
      // Restarts are the subject here, not load shedding (tested on its own): a CI machine busy with other test
      // files must not get a 503 for an event loop lag.
      OVERLOAD_MAX_WAIT_MS: '0',
      // Requests here take under 100 ms: an instance still draining after 5 s is stuck, and exits 1.
      SHUTDOWN_GRACE_MS: '5000'
    })
    instances.push(instance)
    return instance
  }

  const instanceA = start(portA)
  const instanceB = start(portB)
  await Promise.all([listeningUrl(t, instanceA), listeningUrl(t, instanceB)])

  const accessLog = join(dir, 'access.log')
  writeFileSync(join(dir, 'smart-api.conf'), renderSiteConf([portA, portB], nginxPort, accessLog))
  writeFileSync(join(dir, 'nginx.conf'), mainConf(dir))
  const check = spawnSync(nginxBinary, ['-t', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', 'stderr'], { encoding: 'utf8' })
  t.equal(check.status, 0, 'nginx -t accepts deploy/nginx.conf', { output: check.stderr })
  if (check.status !== 0) return
  const proxy = startNginx(nginxBinary, dir)
  running.nginx = proxy
  const base = `http://127.0.0.1:${nginxPort}`
  await until200(t, `${base}/health`, 10_000, 'nginx', () => proxy.child.exitCode === null)

  const clients = Array.from({ length: CLIENTS }, () => loadClient(base, agent, load))
  const startedAt = performance.now()
  const timeline: string[] = []
  const mark = (event: string): void => { timeline.push(`${Math.round(performance.now() - startedAt)} ms: ${event}`) }
  await sleep(STEADY_MS)

  // A rolling restart: one instance at a time, the next one only once the restarted one takes traffic.
  const drained: Record<string, { code: number | null | 'still running', ms: number }> = {}
  const restarted: Record<string, ServerProcess> = {}
  for (const [name, old, port] of [['A', instanceA, portA], ['B', instanceB, portB]] as const) {
    load.phase = `${name} restarting`
    mark(`SIGTERM to ${name}`)
    drained[name] = await drain(old)
    mark(`${name} exited with ${String(drained[name]?.code)}`)
    // A stuck instance would hold its connections from nginx open on the port the new one takes over.
    if (drained[name]?.code === 'still running') old.child.kill('SIGKILL')
    const fresh = start(port)
    restarted[name] = fresh
    const freshUrl = await listeningUrl(t, fresh)
    await until200(t, `${freshUrl}/ready`, 10_000, `${name}'`, () => fresh.child.exitCode === null)
    mark(`${name}' ready`)
    await takesTraffic(t, fresh, `${name}'`)
    mark(`${name}' takes traffic through nginx`)
    load.phase = name === 'A' ? 'between the restarts' : 'both restarted'
    await sleep(name === 'A' ? STEADY_MS / 2 : STEADY_MS)
  }

  load.stopping = true
  const settled = await Promise.race([Promise.all(clients).then(() => true), sleep(10_000, undefined, { ref: false }).then(() => false)])
  t.ok(settled, 'every client request was answered once the load stopped')
  mark('load stopped')

  // The verdict: not one client request failed.
  const statuses = countBy(load.answers, (answer) => answer.status === 0 ? `error: ${answer.detail}` : String(answer.status))
  const failures = load.answers.filter((answer) => answer.status !== 200 || !answer.success)
  t.equal(failures.length, 0, `every request answered 200 through the restarts: ${JSON.stringify(statuses)}`,
    { failures: failures.slice(0, 10) })
  t.ok(load.answers.every((answer) => answer.status === 0 || answer.idEchoed), 'x-request-id went through nginx both ways')
  for (const [name, old] of [['A', instanceA], ['B', instanceB]] as const) {
    // Exit 1 after SHUTDOWN_GRACE_MS means the instance never finished closing: typically a keep-alive connection
    // from nginx left open after its last answer.
    t.equal(drained[name]?.code, 0, `instance ${name} drained and exited 0 (${drained[name]?.ms} ms after SIGTERM)`,
      { output: old.output().split('\n').filter((line) => !line.includes('"msg":"smart request"')).join('\n').slice(-2000) })
  }

  const perPhase = countBy(load.answers, (answer) => answer.phase)
  for (const phase of ['both up', 'A restarting', 'between the restarts', 'B restarting', 'both restarted']) {
    t.ok((perPhase[phase] ?? 0) > 0, `requests were served in the phase "${phase}": ${perPhase[phase] ?? 0}`)
  }
  for (const [name, instance] of [['A', instanceA], ['B', instanceB], ['A\'', restarted.A], ['B\'', restarted.B]] as const) {
    t.ok(instance !== undefined && smartRequestsLogged(instance) > 0, `instance ${name} served requests: ${instance === undefined ? 0 : smartRequestsLogged(instance)}`)
  }

  // nginx's view: which instance served each request, and which requests it had to send to a second instance.
  interface AccessLine { request_id: string, status: number, upstream_addr: string, upstream_status: string }
  const logged = readFileSync(accessLog, 'utf8').split('\n').filter((line) => line !== '')
    .map((line) => JSON.parse(line) as AccessLine).filter((line) => line.request_id.startsWith('scale-out-'))
  t.equal(logged.length, load.answers.length, 'nginx logged every client request')
  const phaseOf = new Map(load.answers.map((answer) => [answer.requestId, answer.phase]))
  const retried = logged.filter((line) => line.upstream_status.includes(','))
  t.ok(retried.length > 0, `nginx routed ${retried.length} requests around a draining or stopped instance`,
    { upstreamStatuses: countBy(retried, (line) => line.upstream_status) })
  const servedBy = countBy(logged, (line) => `${phaseOf.get(line.request_id) ?? '?'} → ${line.upstream_addr.split(', ').at(-1) ?? '?'}`)
  t.comment(`ports: A ${portA}, B ${portB}; answers per phase and instance: ${JSON.stringify(servedBy)}`)
  t.comment(`retried: ${JSON.stringify(countBy(retried, (line) => `${phaseOf.get(line.request_id) ?? '?'}: ${line.upstream_status}`))}`)

  // With every instance gone, nginx itself answers: JSON 503 with Retry-After, in the service's error shape.
  const [lastA, lastB] = await Promise.all([drain(restarted.A as ServerProcess), drain(restarted.B as ServerProcess)])
  t.equal(lastA.code, 0, 'A\' exited 0')
  t.equal(lastB.code, 0, 'B\' exited 0')
  const noInstance = await call(`${base}/api/smart?timeout=500`, { headers: { 'x-request-id': 'no-instance-left' } })
  t.equal(noInstance.status, 503, 'no instance left: 503')
  t.match(noInstance.json, { success: false, statusCode: 503, error: 'Service Unavailable' })
  t.equal(noInstance.headers['retry-after'], '1')
  t.equal(noInstance.headers['x-request-id'], 'no-instance-left')

  t.comment(`${load.answers.length} requests; ${timeline.join('; ')}; test ran ${Math.round(performance.now() - testStartedAt)} ms`)
  t.notOk(proxy.output().includes('[emerg]') || proxy.output().includes('[alert]'), 'nginx reported nothing serious', { output: proxy.output() })
})
