/**
 * Yardstick: the service with its defaults against bench/bare-hedging-route.ts, the same hedging schedule with
 * nothing else (plain Fastify, bare node:http), on the same upstreams under the same load in the same run.
 * The difference is what the service's machinery costs per request: CPU, latency of the successes, lateness
 * at the deadline. A third server, yardstick-got, is that route with got as its upstream client (as the
 * service must use): yardstick-got / yardstick is what got alone costs, the rest of service / yardstick is
 * the service's own machinery. The targets compare the service with the node:http yardstick only.
 *
 *   tail-200    seeded simulator, 200 closed-loop clients, timeout=1000: 400 requests warm-up, 3000 measured
 *   deadline-a  never-answering upstream, open loop 500 req/s for 5 s, timeout=300
 *   deadline-b  never-answering upstream, open loop 1000 req/s for 5 s, timeout=1000
 *
 * Every measured run has a fresh upstream and a fresh server (so all three see the seeded simulator's same
 * sequence of fates). Each workload runs in 2 rounds in alternating order (yardstick, yardstick-got, service;
 * then service, yardstick-got, yardstick) so that drift of the shared machine's background load does not land
 * on one of them only; the rounds are merged per server: CPU, requests and upstream calls summed, latencies
 * pooled. CPU is the server process's user + system time (/proc/<pid>/stat) over the measured run only.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { runClosedLoop } from '../closed-loop.js'
import { statusOf, type Answer } from '../http-client.js'
import { runOpenLoop, warmUp } from '../open-loop.js'
import { cpuSeconds } from '../processes.js'
import { counts, ms, percent, ratio, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { smartUrl, startBareHedgingRoute, startService, type ServerUnderTest } from '../service.js'
import { countBy, distribution, type Distribution } from '../stats.js'
import type { UpstreamKind } from '../upstream-servers.js'
import { startUpstream } from '../upstreams.js'

const ROUNDS = 2
/** An answer later than the timeout by more than this is late (as in the hedged-tail scenario). */
const LATE_MS = 10
/** The warm-up has finished; what the server still does for it (closing connections) is over after this. */
const SETTLE_BEFORE_MS = 500
/** After the last answer, the teardown of the attempts still running is left this long to be counted. */
const SETTLE_AFTER_MS = 200

type ServerName = 'yardstick' | 'yardstick-got' | 'service'
type WorkloadKey = 'tail-200' | 'deadline-a' | 'deadline-b'

/** What one load run gives back, closed or open loop. */
interface LoadResult {
  answers: Answer[]
  generatorLagMaxMs: number
  /** Open loop only; NaN for the closed loop, which has no schedule. */
  maxScheduleLagMs: number
}

interface Workload {
  key: WorkloadKey
  label: string
  upstream: UpstreamKind
  timeoutMs: number
  warmUp (server: ServerUnderTest): Promise<unknown>
  load (server: ServerUnderTest): Promise<LoadResult>
}

/** One measured run of one server, or several merged. */
interface Measured {
  answers: Answer[]
  cpuSeconds: number
  upstreamCalls: number
  generatorLagMaxMs: number
  maxScheduleLagMs: number
}

interface ServerSummary {
  server: ServerName
  requests: number
  cpuSecondsPer1000: number
  /** Client-side latency of the 200s. */
  success: Distribution
  successRate: number
  /** answer time − timeout over every request that got an HTTP answer. */
  lateness: Distribution
  /** Answers later than timeout + LATE_MS, whatever their status. */
  lateAnswers: number
  status503: number
  statuses: Record<string, number>
  upstreamCallsPerRequest: number
  generatorLagMaxMs: number
  maxScheduleLagMs: number
  /** Per round, in the order they ran: what was merged. */
  rounds: Array<{ requests: number, cpuSeconds: number, upstreamCalls: number }>
}

/** One summary per server, under its name. */
interface WorkloadResult extends Record<ServerName, ServerSummary> {
  key: WorkloadKey
  label: string
  timeoutMs: number
}

function tail200 (): Workload {
  const timeoutMs = 1000
  const clients = 200
  return {
    key: 'tail-200',
    label: `seeded simulator, ${clients} closed-loop clients, timeout=${timeoutMs}, 3000 requests after 400 warm-up`,
    upstream: 'simulator',
    timeoutMs,
    warmUp: (server) => runClosedLoop({ url: smartUrl(server, timeoutMs), clients, maxRequests: 400, maxDurationMs: 10_000 }),
    load: async (server) => {
      const run = await runClosedLoop({ url: smartUrl(server, timeoutMs), clients, maxRequests: 3000, maxDurationMs: 60_000 })
      return { answers: run.answers, generatorLagMaxMs: run.generatorLagMaxMs, maxScheduleLagMs: Number.NaN }
    }
  }
}

/** Open loop against the never-answering upstream; the warm-up is deadline.ts's, on a pool of its own. */
function deadlineWorkload (key: WorkloadKey, ratePerSecond: number, timeoutMs: number): Workload {
  return {
    key,
    label: `never-answering upstream, open loop ${ratePerSecond} req/s for 5 s, timeout=${timeoutMs}`,
    upstream: 'silent',
    timeoutMs,
    warmUp: (server) => warmUp(smartUrl(server, 100)),
    load: (server) => runOpenLoop({ url: smartUrl(server, timeoutMs), ratePerSecond, durationMs: 5000, maxWaitMs: timeoutMs + 10_000 })
  }
}

function startServer (context: ScenarioContext, name: ServerName, workload: Workload, round: number, upstreamUrl: string): Promise<ServerUnderTest> {
  if (name === 'yardstick') return startBareHedgingRoute(upstreamUrl)
  if (name === 'yardstick-got') return startBareHedgingRoute(upstreamUrl, 'got')
  return startService({ upstreamUrl, profileName: profileName(context, `yardstick-${workload.key}-${round + 1}`) })
}

/** One server under one workload: fresh upstream and server, warm-up, then the measured run and its CPU. */
async function measure (context: ScenarioContext, workload: Workload, name: ServerName, round: number): Promise<Measured> {
  context.progress(`yardstick (${workload.key}), round ${round + 1}/${ROUNDS}: ${name}`)
  const upstream = await startUpstream(workload.upstream)
  try {
    const server = await startServer(context, name, workload, round, upstream.url)
    try {
      await workload.warmUp(server)
      await sleep(SETTLE_BEFORE_MS)
      const callsBefore = (await upstream.counters()).requests
      const cpuBefore = await cpuSeconds(server.pid)
      const run = await workload.load(server)
      await sleep(SETTLE_AFTER_MS)
      const cpuAfter = await cpuSeconds(server.pid)
      const calls = (await upstream.counters()).requests - callsBefore
      return { ...run, cpuSeconds: cpuAfter - cpuBefore, upstreamCalls: calls }
    } finally {
      await server.stop()
    }
  } finally {
    await upstream.stop()
  }
}

function summarize (server: ServerName, timeoutMs: number, rounds: readonly Measured[]): ServerSummary {
  const answers = rounds.flatMap((round) => round.answers)
  const requests = answers.length
  const cpu = rounds.reduce((sum, round) => sum + round.cpuSeconds, 0)
  const calls = rounds.reduce((sum, round) => sum + round.upstreamCalls, 0)
  const successes = answers.filter((answer) => answer.status === 200)
  const lateness = answers.filter((answer) => answer.status !== 0).map((answer) => answer.latencyMs - timeoutMs)
  return {
    server,
    requests,
    cpuSecondsPer1000: cpu / requests * 1000,
    success: distribution(successes.map((answer) => answer.latencyMs)),
    successRate: successes.length / requests,
    lateness: distribution(lateness),
    lateAnswers: answers.filter((answer) => answer.latencyMs > timeoutMs + LATE_MS).length,
    status503: answers.filter((answer) => answer.status === 503).length,
    statuses: countBy(answers, statusOf),
    upstreamCallsPerRequest: calls / requests,
    generatorLagMaxMs: Math.max(...rounds.map((round) => round.generatorLagMaxMs)),
    maxScheduleLagMs: Math.max(...rounds.map((round) => round.maxScheduleLagMs)),
    // /proc counts CPU in clock ticks (10 ms): more digits would be float noise.
    rounds: rounds.map((round) => ({ requests: round.answers.length, cpuSeconds: Number(round.cpuSeconds.toFixed(2)), upstreamCalls: round.upstreamCalls }))
  }
}

const SERVERS: readonly ServerName[] = ['yardstick', 'yardstick-got', 'service']

/** All servers, ROUNDS rounds in alternating order, merged per server. */
async function runWorkload (context: ScenarioContext, workload: Workload): Promise<WorkloadResult> {
  const measured: Record<ServerName, Measured[]> = { yardstick: [], 'yardstick-got': [], service: [] }
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? SERVERS : [...SERVERS].reverse()
    for (const name of order) measured[name].push(await measure(context, workload, name, round))
  }
  return {
    key: workload.key,
    label: workload.label,
    timeoutMs: workload.timeoutMs,
    yardstick: summarize('yardstick', workload.timeoutMs, measured.yardstick),
    'yardstick-got': summarize('yardstick-got', workload.timeoutMs, measured['yardstick-got']),
    service: summarize('service', workload.timeoutMs, measured.service)
  }
}

/** value / base, shown only where both are positive: a ratio of values around zero means nothing. */
function ratioOf (value: number, base: number): string {
  return value > 0 && base > 0 ? ratio(value / base) : '-'
}

function cpu (value: number): string {
  return Number.isFinite(value) ? value.toFixed(3) : '-'
}

function tailTable (result: WorkloadResult): string {
  const row = (summary: ServerSummary): string[] => [
    summary.server,
    String(summary.requests),
    cpu(summary.cpuSecondsPer1000),
    percent(summary.successRate),
    ms(summary.success.p50),
    ms(summary.success.p90),
    ms(summary.success.p99),
    String(summary.lateAnswers),
    String(summary.status503),
    summary.upstreamCallsPerRequest.toFixed(2),
    ms(summary.generatorLagMaxMs),
    counts(summary.statuses)
  ]
  const ratios = (name: ServerName): string[] => {
    const value = result[name]
    const base = result.yardstick
    return [
      `${name} / yardstick`, '',
      ratioOf(value.cpuSecondsPer1000, base.cpuSecondsPer1000), '',
      ratioOf(value.success.p50, base.success.p50),
      ratioOf(value.success.p90, base.success.p90),
      ratioOf(value.success.p99, base.success.p99),
      '', '', '', '', ''
    ]
  }
  return table(`yardstick (${result.key}): ${result.label}, ${ROUNDS} rounds merged; latency of the 200s, late = after timeout + ${LATE_MS} ms`,
    ['server', 'requests', 'CPU s / 1000 req', 'success', 'p50 ms', 'p90 ms', 'p99 ms', 'late', '503', 'calls/req', 'gen. lag max', 'answers by status'],
    [...SERVERS.map((name) => row(result[name])), ratios('service'), ratios('yardstick-got')])
}

function deadlineTable (result: WorkloadResult): string {
  const row = (summary: ServerSummary): string[] => [
    summary.server,
    String(summary.requests),
    cpu(summary.cpuSecondsPer1000),
    ms(summary.lateness.p50),
    ms(summary.lateness.p90),
    ms(summary.lateness.p99),
    ms(summary.lateness.max),
    String(summary.status503),
    summary.upstreamCallsPerRequest.toFixed(2),
    ms(summary.maxScheduleLagMs),
    ms(summary.generatorLagMaxMs),
    counts(summary.statuses)
  ]
  const ratios = (name: ServerName): string[] => {
    const value = result[name]
    const base = result.yardstick
    return [
      `${name} / yardstick`, '',
      ratioOf(value.cpuSecondsPer1000, base.cpuSecondsPer1000),
      ratioOf(value.lateness.p50, base.lateness.p50),
      ratioOf(value.lateness.p90, base.lateness.p90),
      ratioOf(value.lateness.p99, base.lateness.p99),
      ratioOf(value.lateness.max, base.lateness.max),
      '', '', '', '', ''
    ]
  }
  return table(`yardstick (${result.key}): ${result.label}, ${ROUNDS} rounds merged; lateness = answer time − timeout (ms, every HTTP answer)`,
    ['server', 'sent', 'CPU s / 1000 req', 'p50', 'p90', 'p99', 'max', '503', 'calls/req', 'send lag max', 'gen. lag max', 'answers by status'],
    [...SERVERS.map((name) => row(result[name])), ratios('service'), ratios('yardstick-got')])
}

/** e.g. 'service 0.412, yardstick 0.380 (1.08×)'. */
function both (service: number, yardstick: number, format: (value: number) => string): string {
  return `service ${format(service)}, yardstick ${format(yardstick)} (${ratioOf(service, yardstick)})`
}

function noShedding (result: WorkloadResult): Target {
  return {
    name: `yardstick ${result.key}: no 503 from the service (defaults)`,
    measured: `service ${result.service.status503}, yardstick ${result.yardstick.status503}`,
    met: result.service.status503 === 0
  }
}

function tailTargets (result: WorkloadResult): Target[] {
  const { service, yardstick } = result
  const withinOf = (quantile: 'p50' | 'p90'): Target => {
    const gap = service.success[quantile] - yardstick.success[quantile]
    return {
      name: `yardstick tail-200: ${quantile} of the 200s within 10 ms of the yardstick's`,
      measured: `${both(service.success[quantile], yardstick.success[quantile], (value) => `${ms(value)} ms`)}, gap ${ms(gap)} ms`,
      met: gap <= 10
    }
  }
  return [
    {
      name: 'yardstick tail-200: CPU per request ≤ 1.15× the yardstick\'s',
      measured: both(service.cpuSecondsPer1000, yardstick.cpuSecondsPer1000, (value) => `${cpu(value)} s/1000`),
      met: service.cpuSecondsPer1000 <= 1.15 * yardstick.cpuSecondsPer1000
    },
    withinOf('p50'),
    withinOf('p90'),
    {
      name: `yardstick tail-200: late answers (> timeout + ${LATE_MS} ms) ≤ the yardstick's + 5`,
      measured: both(service.lateAnswers, yardstick.lateAnswers, String),
      met: service.lateAnswers <= yardstick.lateAnswers + 5
    },
    noShedding(result)
  ]
}

function latenessWithin (result: WorkloadResult, quantile: 'p99' | 'max', factor: number, slackMs: number): Target {
  const service = result.service.lateness[quantile]
  const yardstick = result.yardstick.lateness[quantile]
  const slack = slackMs === 0 ? '' : ` + ${slackMs} ms`
  return {
    name: `yardstick ${result.key}: lateness ${quantile} ≤ ${factor} × the yardstick's${slack}`,
    measured: both(service, yardstick, (value) => `${ms(value)} ms`),
    met: service <= factor * yardstick + slackMs
  }
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  const tail = await runWorkload(context, tail200())
  const deadlineA = await runWorkload(context, deadlineWorkload('deadline-a', 500, 300))
  const deadlineB = await runWorkload(context, deadlineWorkload('deadline-b', 1000, 1000))
  const targets: Target[] = [
    ...tailTargets(tail),
    latenessWithin(deadlineA, 'p99', 1.5, 5),
    latenessWithin(deadlineA, 'max', 1.5, 5),
    noShedding(deadlineA),
    latenessWithin(deadlineB, 'p99', 1.2, 0)
  ]
  return {
    tables: [tailTable(tail), deadlineTable(deadlineA), deadlineTable(deadlineB)],
    targets,
    results: { rounds: ROUNDS, workloads: [tail, deadlineA, deadlineB] }
  }
}

export const yardstick: Scenario = { name: 'yardstick', run }
