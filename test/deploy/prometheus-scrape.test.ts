/**
 * The real thing: a Prometheus (Debian's, the release promtool comes with) scrapes the service, running under
 * traffic, with deploy/prometheus's rule files, and every recording rule and every query of the Grafana dashboard
 * must return data through its HTTP API. promtool's checks prove the rules are valid PromQL; only this proves
 * they match the series the service really exports, labels included.
 *
 * The traffic makes every series the rules and the dashboard read exist: successes on the four endpoints, 408s
 * and answers at the deadline (deadline overshoot), 502s, hedges and hedge wins, hedges held back by an
 * upstream's 503 + Retry-After, invalid requests, and requests shed in a short overload.
 *
 * Prometheus gets its own configuration derived from deploy/prometheus/prometheus.yml (the same rule files; the
 * service's loopback port as the target; a 1 s scrape and evaluation interval), a temporary data folder and a
 * free loopback port, and is stopped at the end, even when the test fails.
 */
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, Agent, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { isAbsolute, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { stringify as stringifyYaml } from 'yaml'
import { ENDPOINTS } from '../../lib/call-policies.js'
import { findExecutable } from '../helpers/docker-engine.js'
import { eventually } from '../helpers/eventually.js'
import { freePort } from '../helpers/free-port.js'
import { call, withService, type TestUpstream } from '../helpers/service.js'
import {
  alertingRules, dashboardFiles, panelQueries, prometheusDir, readDashboard, readPrometheusConfig, recordingRules, renderVariables,
  serviceScrapeJob, variableQueryText, variableValues
} from './observability.js'

/** What the upstream does with an attempt, chosen by the request id the test sends (`<scenario>-<n>`). */
type Scenario = 'ok' | 'hedge' | 'hang' | 'fail' | 'pushback' | 'within'

/** Client requests, sent in turn by every traffic worker: one request of each kind every half second or so. */
const TRAFFIC: Array<[path: string, scenario: Scenario]> = [
  ['/api/smart?timeout=1000', 'ok'], // 200 from the first attempt
  ['/api/smart?timeout=1000', 'hedge'], // the first attempt is slow: hedged, and a hedge wins
  ['/api/smart?timeout=60', 'hang'], // nothing answers: 408 at the deadline, attempts aborted
  ['/api/smart?timeout=1000', 'fail'], // 500, then bodies that are not JSON: 502
  ['/api/smart?timeout=1000', 'pushback'], // 503 + Retry-After: the hedges are held back, 502
  ['/api/within-timeout?timeout=60', 'within'], // one success, the others hang: 200 at the deadline
  ['/api/first?timeout=1000', 'ok'],
  ['/api/all?timeout=1000', 'ok'],
  ['/api/smart?timeout=soon', 'ok'] // 400
]
const TRAFFIC_WORKERS = 2
const PAUSE_BETWEEN_REQUESTS_MS = 20

/** How long Prometheus may take to start, and then to have every rule and query answer with data. */
const PROMETHEUS_READY_MS = 20_000
const ALL_DATA_MS = 20_000

/** The upstream of the scenarios: what each attempt gets depends on the client's request id and the attempt's number. */
async function startScenarioUpstream (): Promise<TestUpstream> {
  const json = (res: ServerResponse, status: number, headers: Record<string, string> = {}): void => {
    if (!res.destroyed) res.writeHead(status, { 'content-type': 'application/json', ...headers }).end('{"time":5}')
  }
  const later = (res: ServerResponse, ms: number, answer: () => void): void => {
    const timer = setTimeout(answer, ms)
    res.on('close', () => clearTimeout(timer))
  }
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const scenario = String(req.headers['x-request-id']).split('-')[0] as Scenario
    const firstAttempt = req.headers['x-attempt'] === '1'
    switch (scenario) {
      case 'ok': return later(res, 5, () => json(res, 200))
      case 'hedge': return later(res, firstAttempt ? 400 : 5, () => json(res, 200))
      case 'hang': return
      case 'fail': return firstAttempt ? json(res, 500) : later(res, 5, () => { if (!res.destroyed) res.writeHead(200).end('not json') })
      case 'pushback': return json(res, 503, { 'retry-after': '1' })
      case 'within': if (firstAttempt) later(res, 5, () => json(res, 200))
    }
  })
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/work`,
    close: async () => {
      server.closeAllConnections()
      server.close()
      await once(server, 'close')
    }
  }
}

/** Keeps this process's event loop busy, as a flood of requests would: the service runs in this process. */
function saturateEventLoop (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
}

/**
 * Overloads the service until it sheds a request: 300 new connections at once while the event loop is busy 15 ms
 * of every 16 (as test/plugins/load-shedding.test.ts does), so that new connections wait in the accept queue.
 * `agent` holds a connection opened before, which is read every turn, for asking without waiting in that queue.
 */
async function overloadUntilShed (url: string, agent: Agent): Promise<void> {
  const stalls = setInterval(() => saturateEventLoop(15), 16)
  const storm = Promise.all(Array.from({ length: 300 }, (_, i) => call(`${url}/api/smart?timeout=2000`, { headers: { 'x-request-id': `ok-storm${i}` } })))
  try {
    await eventually(async () => (await call(`${url}/api/smart?timeout=2000`, { agent, headers: { 'x-request-id': 'ok-shed' } })).status === 503, 10_000, 10)
  } finally {
    // The connections still queued are accepted at once when the event loop is free again.
    clearInterval(stalls)
    await storm
  }
}

interface Sample {
  metric: Record<string, string>
  value: [number, string]
}

/** An instant query through Prometheus's HTTP API: the samples of its result (a scalar as one sample). */
async function instantQuery (base: string, promql: string): Promise<Sample[]> {
  const response = await fetch(`${base}/api/v1/query?${new URLSearchParams({ query: promql }).toString()}`)
  const body = await response.json() as { status: string, error?: string, data?: { resultType: string, result: unknown } }
  if (body.status !== 'success' || body.data === undefined) throw new Error(`Prometheus refused ${promql}: ${body.error ?? response.status}`)
  const { resultType, result } = body.data
  if (resultType === 'scalar') return [{ metric: {}, value: result as [number, string] }]
  if (resultType !== 'vector') throw new Error(`${promql}: unexpected result type ${resultType}`)
  return result as Sample[]
}

async function labelValues (base: string, label: string, selector: string): Promise<string[]> {
  const response = await fetch(`${base}/api/v1/label/${label}/values?${new URLSearchParams({ 'match[]': selector }).toString()}`)
  const body = await response.json() as { status: string, data: string[] }
  return body.status === 'success' ? body.data : []
}

/** Data: at least one sample whose value is a number (a quantile of nothing is NaN). */
const hasData = (samples: Sample[]): boolean => samples.some((sample) => Number.isFinite(Number(sample.value[1])))

/**
 * deploy/prometheus/prometheus.yml for this test: the same rules and scrape settings, 1 s intervals, and the
 * service's loopback address as the only target instead of the compose service's (static or discovered).
 */
function derivedConfig (serviceTarget: string): string {
  const config = readPrometheusConfig()
  const job = Object.fromEntries(Object.entries(serviceScrapeJob(config))
    .filter(([setting]) => setting !== 'static_configs' && !setting.endsWith('_sd_configs')))
  return stringifyYaml({
    ...config,
    global: { ...config.global, scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    // Relative rule paths are relative to the configuration file, which is in a temporary folder here.
    rule_files: (config.rule_files ?? []).map((pattern) => isAbsolute(pattern) ? pattern : join(prometheusDir, pattern)),
    scrape_configs: [{ ...job, static_configs: [{ targets: [serviceTarget] }] }]
  })
}

interface Prometheus {
  child: ChildProcess
  base: string
  output: () => string
}

/**
 * Starts Prometheus on a free loopback port with its data in `dir`. It runs under coreutils' `timeout`, so that
 * it cannot outlive a test process that was killed before its teardown ran.
 */
async function startPrometheus (binary: string, dir: string, config: string): Promise<Prometheus> {
  const configFile = join(dir, 'prometheus.yml')
  writeFileSync(configFile, config)
  const port = await freePort()
  const child = spawn(findExecutable('timeout') ?? 'timeout', ['--kill-after=5', '180', binary,
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn'
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  const collect = (chunk: Buffer): void => { output = (output + chunk.toString('utf8')).slice(-20_000) }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  child.once('error', (error) => { output += `\n${error.message}` })
  return { child, base: `http://127.0.0.1:${port}`, output: () => output }
}

async function stopPrometheus (prometheus: Prometheus): Promise<void> {
  const { child } = prometheus
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const stopped = await Promise.race([exited.then(() => true), sleep(10_000, false, { ref: false })])
  if (!stopped) {
    child.kill('SIGKILL')
    await exited
  }
}

const prometheusBinary = findExecutable('prometheus')

t.test('prometheus is installed (apt-get install prometheus; .ci/run installs it)', async (t) => {
  t.ok(prometheusBinary, 'prometheus is on PATH')
})

t.test('a real Prometheus scraping the service under traffic: every recording rule and every dashboard query returns data',
  { skip: prometheusBinary === undefined, timeout: 90_000 }, async (t) => {
    const startedAt = performance.now()
    const seconds = (since: number): string => `${((performance.now() - since) / 1000).toFixed(1)} s`
    const upstream = await startScenarioUpstream()
    const { service } = await withService(t, {
      upstream,
      env: {
        // Hedges soon, so that a slow first attempt loses to them; a pushback pause short enough that hedging
        // resumes between two pushback requests; shedding on a shorter wait, for the overload below.
        HEDGE_DELAY_MS: '30',
        MAX_PUSHBACK_MS: '100',
        OVERLOAD_MAX_WAIT_MS: '50'
      }
    })

    const traffic = { stopping: false, failedRequests: 0 }
    const worker = async (offset: number): Promise<void> => {
      for (let n = offset; !traffic.stopping; n++) {
        const [path, scenario] = TRAFFIC[n % TRAFFIC.length] as [string, Scenario]
        try {
          await call(`${service.url}${path}`, { headers: { 'x-request-id': `${scenario}-${n}` } })
        } catch {
          traffic.failedRequests++
        }
        await sleep(PAUSE_BETWEEN_REQUESTS_MS)
      }
    }
    const workers = Array.from({ length: TRAFFIC_WORKERS }, (_, i) => worker(i * 4))
    // Teardowns run last registered first: the traffic ends before the service closes.
    t.teardown(async () => {
      traffic.stopping = true
      await Promise.all(workers)
    })

    const dir = mkdtempSync(join(tmpdir(), 'smart-api-prometheus-'))
    const prometheus = await startPrometheus(prometheusBinary as string, dir, derivedConfig(new URL(service.url).host))
    t.teardown(async () => {
      await stopPrometheus(prometheus)
      rmSync(dir, { recursive: true, force: true })
    })
    const prometheusStartedAt = performance.now()

    // While Prometheus starts: a short overload, until the service sheds a request.
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    t.teardown(() => agent.destroy())
    await call(`${service.url}/health`, { agent })
    await overloadUntilShed(service.url, agent)
    t.comment(`the service shed a request ${seconds(startedAt)} after the start`)

    try {
      await eventually(async () => {
        if (prometheus.child.exitCode !== null) throw new Error(`prometheus exited with ${prometheus.child.exitCode}`)
        return (await fetch(`${prometheus.base}/-/ready`).catch(() => undefined))?.status === 200
      }, PROMETHEUS_READY_MS, 100)
    } catch (error) {
      t.fail(`Prometheus did not become ready: ${(error as Error).message}`, { output: prometheus.output() })
      return
    }
    const jobName = serviceScrapeJob().job_name
    try {
      await eventually(async () => hasData(await instantQuery(prometheus.base, `up{job="${jobName}"} == 1`)), PROMETHEUS_READY_MS, 200)
    } catch {
      const targets = await (await fetch(`${prometheus.base}/api/v1/targets`)).json() as unknown
      t.fail('Prometheus did not scrape the service', { targets, output: prometheus.output() })
      return
    }
    t.comment(`Prometheus ready and the service's target up ${seconds(prometheusStartedAt)} after its start`)

    const queries = recordingRules().map((rule) => ({ where: `recording rule ${rule.record}`, promql: rule.record }))
    for (const path of dashboardFiles()) {
      const dashboard = readDashboard(path)
      const values = variableValues(dashboard, { job: jobName })
      for (const { where, expr } of panelQueries(dashboard)) queries.push({ where: `${dashboard.uid}: ${where}`, promql: renderVariables(expr, values) })

      // The template variables' label_values(selector, label), as Grafana asks Prometheus for them.
      for (const variable of dashboard.templating.list.filter((candidate) => candidate.type === 'query')) {
        const match = /^label_values\((.+),\s*(\w+)\)$/.exec(renderVariables(variableQueryText(variable), values))
        t.ok(match, `$${variable.name}: label_values(selector, label)`)
        if (match === null) continue
        const [, selector = '', label = ''] = match
        const expected = label === 'job' ? [jobName] : label === 'endpoint' ? [...ENDPOINTS] : []
        let listed: string[] = []
        await eventually(async () => {
          listed = await labelValues(prometheus.base, label, selector)
          return listed.length > 0 && expected.every((value) => listed.includes(value))
        }, ALL_DATA_MS, 200).catch(() => {})
        t.ok(listed.length > 0, `$${variable.name}: ${variableQueryText(variable)} lists values`, { listed })
        for (const value of expected) t.ok(listed.includes(value), `$${variable.name} offers ${value}`, { listed })
      }
    }

    // Rules are evaluated every second, and rate() needs two scrapes in its window: ask until each has data.
    const latest = new Map<string, Sample[]>()
    const pending = new Set(queries.map((query) => query.promql))
    try {
      await eventually(async () => {
        for (const promql of pending) {
          const samples = await instantQuery(prometheus.base, promql)
          latest.set(promql, samples)
          if (hasData(samples)) pending.delete(promql)
        }
        return pending.size === 0
      }, ALL_DATA_MS, 250)
    } catch {
      // Reported query by query below.
    }
    t.comment(`${queries.length - pending.size} of ${queries.length} queries had data ${seconds(prometheusStartedAt)} after Prometheus started; ` +
      `${traffic.failedRequests} traffic requests failed to connect`)
    for (const { where, promql } of queries) {
      t.ok(!pending.has(promql), `${where}: data`, { promql, result: latest.get(promql) })
    }

    // No rule failed to evaluate (a duplicate label set in an `or`, say, fails only with real series).
    const rules = await (await fetch(`${prometheus.base}/api/v1/rules`)).json() as
      { data: { groups: Array<{ rules: Array<{ name: string, health: string, lastError?: string }> }> } }
    const evaluated = rules.data.groups.flatMap((group) => group.rules)
    t.equal(evaluated.length, recordingRules().length + alertingRules().length, 'every rule of deploy/prometheus/rules is loaded')
    for (const rule of evaluated) t.equal(rule.health, 'ok', `${rule.name} evaluates`, { lastError: rule.lastError })
    t.comment(`the whole test took ${seconds(startedAt)}`)
  })
