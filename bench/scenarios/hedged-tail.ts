/**
 * Hedged tail: the seeded simulator as the upstream (100–600 ms, 500s, invalid JSON, hangs), closed-loop
 * clients, timeout=1000, with hedging on (the defaults) and off (HEDGE_REQUESTS=0). Beside each run, the
 * zero-overhead limit of the same schedule (bench/schedule-limit.ts): the gap is what the service costs.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { REFERENCE_HEDGE_DELAY_MS, REFERENCE_HEDGE_REQUESTS } from '../../lib/constants.js'
import { runClosedLoop } from '../closed-loop.js'
import { statusOf } from '../http-client.js'
import { REPO_ROOT } from '../processes.js'
import { counts, ms, percent, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { scheduleLimit, type ScheduleLimit } from '../schedule-limit.js'
import { startService } from '../service.js'
import { ascending, cdfPoints, countBy, distribution, type Distribution } from '../stats.js'
import { lineChart } from '../svg.js'
import { SIMULATOR_PROFILE } from '../upstream-servers.js'
import { startUpstream } from '../upstreams.js'

const TIMEOUT_MS = 1000
/** The service runs with its defaults: the reference schedule. */
const HEDGE_DELAY_MS = REFERENCE_HEDGE_DELAY_MS
const HEDGE_REQUESTS = REFERENCE_HEDGE_REQUESTS
const CLIENT_COUNTS = [30, 500]
const MAX_REQUESTS = 2000
const MAX_DURATION_MS = 20_000
/** An answer later than the timeout by more than this is late. */
const LATE_MS = 10
/** How close to the schedule's limit p50 and p90 must come. */
const GAP_TARGET_MS = 10

interface TailRun {
  clients: number
  hedging: boolean
  requests: number
  durationMs: number
  successRate: number
  success: Distribution
  upstreamCallsPerRequest: number
  lateAnswers: number
  statuses: Record<string, number>
  limit: { successRate: number, p50Ms: number, p90Ms: number }
  gapP50Ms: number
  gapP90Ms: number
  generatorLagMaxMs: number
}

async function runOnce (context: ScenarioContext, clients: number, hedging: boolean, limit: ScheduleLimit): Promise<{ run: TailRun, successLatencies: number[] }> {
  const mode = hedging ? 'on' : 'off'
  context.progress(`hedged tail: ${clients} clients, hedging ${mode}: up to ${MAX_REQUESTS} requests or ${MAX_DURATION_MS / 1000} s`)
  const upstream = await startUpstream('simulator')
  try {
    const service = await startService({
      upstreamUrl: upstream.url,
      env: hedging ? {} : { HEDGE_REQUESTS: '0' },
      profileName: profileName(context, `hedged-tail-${clients}-${mode}`)
    })
    try {
      const url = new URL(`/api/smart?timeout=${TIMEOUT_MS}`, service.origin)
      await runClosedLoop({ url, clients, maxRequests: Math.max(100, clients), maxDurationMs: 5000 }) // warm-up
      const callsBefore = (await upstream.counters()).requests
      const { answers, durationMs, generatorLagMaxMs } = await runClosedLoop({ url, clients, maxRequests: MAX_REQUESTS, maxDurationMs: MAX_DURATION_MS })
      const calls = (await upstream.counters()).requests - callsBefore
      const successLatencies = ascending(answers.filter((answer) => answer.status === 200).map((answer) => answer.latencyMs))
      const success = distribution(successLatencies)
      return {
        successLatencies,
        run: {
          clients,
          hedging,
          requests: answers.length,
          durationMs,
          successRate: successLatencies.length / answers.length,
          success,
          upstreamCallsPerRequest: calls / answers.length,
          lateAnswers: answers.filter((answer) => answer.latencyMs > TIMEOUT_MS + LATE_MS).length,
          statuses: countBy(answers, statusOf),
          limit: { successRate: limit.successRate, p50Ms: limit.p50Ms, p90Ms: limit.p90Ms },
          gapP50Ms: success.p50 - limit.p50Ms,
          gapP90Ms: success.p90 - limit.p90Ms,
          generatorLagMaxMs
        }
      }
    } finally {
      await service.stop()
    }
  } finally {
    await upstream.stop()
  }
}

function latencyPlot (at30: { on: number[], off: number[], onRequests: number, offRequests: number }, hedgedLimit: ScheduleLimit, unhedgedLimit: ScheduleLimit): string {
  return lineChart({
    title: 'Hedged tail: successful answers at 30 clients',
    subtitle: `seeded simulator, timeout=${TIMEOUT_MS} ms, closed loop; dashed: the schedule's zero-overhead limit`,
    xLabel: 'answer time (ms)',
    yLabel: 'share of requests answered 200 within t',
    xMax: TIMEOUT_MS + 50,
    yMax: 1,
    formatY: (y) => `${Math.round(y * 100)}%`,
    series: [
      { label: 'service, hedging on', color: '#1f77b4', points: cdfPoints(at30.on, at30.onRequests) },
      { label: 'limit, hedging on (simulated)', color: '#1f77b4', dashed: true, points: cdfPoints(hedgedLimit.successLatenciesMs, hedgedLimit.trials) },
      { label: 'service, hedging off', color: '#d62728', points: cdfPoints(at30.off, at30.offRequests) },
      { label: 'limit, hedging off (simulated)', color: '#d62728', dashed: true, points: cdfPoints(unhedgedLimit.successLatenciesMs, unhedgedLimit.trials) }
    ]
  })
}

function targetsOf (runs: readonly TailRun[]): Target[] {
  return runs.filter((run) => run.hedging).flatMap((run) => [
    { name: `hedged, ${run.clients} clients: p50 within ${GAP_TARGET_MS} ms of the limit`, measured: `gap ${ms(run.gapP50Ms)} ms`, met: run.gapP50Ms <= GAP_TARGET_MS },
    { name: `hedged, ${run.clients} clients: p90 within ${GAP_TARGET_MS} ms of the limit`, measured: `gap ${ms(run.gapP90Ms)} ms`, met: run.gapP90Ms <= GAP_TARGET_MS },
    { name: `hedged, ${run.clients} clients: no answer later than timeout + ${LATE_MS} ms`, measured: String(run.lateAnswers), met: run.lateAnswers === 0 }
  ])
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  context.progress('hedged tail: simulating the schedule\'s zero-overhead limit')
  const hedgedLimit = scheduleLimit(SIMULATOR_PROFILE, { hedgeDelayMs: HEDGE_DELAY_MS, hedgeRequests: HEDGE_REQUESTS, timeoutMs: TIMEOUT_MS })
  const unhedgedLimit = scheduleLimit(SIMULATOR_PROFILE, { hedgeDelayMs: HEDGE_DELAY_MS, hedgeRequests: 0, timeoutMs: TIMEOUT_MS })
  const runs: TailRun[] = []
  const at30 = { on: [] as number[], off: [] as number[], onRequests: 0, offRequests: 0 }
  for (const clients of CLIENT_COUNTS) {
    for (const hedging of [true, false]) {
      const { run, successLatencies } = await runOnce(context, clients, hedging, hedging ? hedgedLimit : unhedgedLimit)
      runs.push(run)
      if (clients === 30 && hedging) Object.assign(at30, { on: successLatencies, onRequests: run.requests })
      if (clients === 30 && !hedging) Object.assign(at30, { off: successLatencies, offRequests: run.requests })
    }
  }
  await mkdir(join(REPO_ROOT, context.plotsDir), { recursive: true })
  await writeFile(join(REPO_ROOT, context.plotsDir, 'hedged-latency.svg'), latencyPlot(at30, hedgedLimit, unhedgedLimit))
  const printed = table(
    `hedged tail (seeded simulator, timeout=${TIMEOUT_MS}, closed loop, service defaults incl. load shedding; ` +
      `limit = zero-overhead schedule, ${hedgedLimit.trials} simulated requests; gap = service − limit)`,
    ['clients / hedging', 'requests', 'success', 'limit', 'p50 ms', 'limit', 'gap', 'p90 ms', 'limit', 'gap', 'p99 ms', 'calls/req', 'late', 'gen. lag max', 'answers by status'],
    runs.map((run) => [
      `${run.clients} / ${run.hedging ? 'on' : 'off'}`,
      String(run.requests),
      percent(run.successRate),
      percent(run.limit.successRate),
      ms(run.success.p50),
      ms(run.limit.p50Ms),
      ms(run.gapP50Ms),
      ms(run.success.p90),
      ms(run.limit.p90Ms),
      ms(run.gapP90Ms),
      ms(run.success.p99),
      run.upstreamCallsPerRequest.toFixed(2),
      String(run.lateAnswers),
      ms(run.generatorLagMaxMs),
      counts(run.statuses)
    ])
  )
  return {
    tables: [printed],
    targets: targetsOf(runs),
    results: {
      runs,
      limits: {
        hedged: { successRate: hedgedLimit.successRate, p50Ms: hedgedLimit.p50Ms, p90Ms: hedgedLimit.p90Ms, p99Ms: hedgedLimit.p99Ms },
        unhedged: { successRate: unhedgedLimit.successRate, p50Ms: unhedgedLimit.p50Ms, p90Ms: unhedgedLimit.p90Ms, p99Ms: unhedgedLimit.p99Ms }
      },
      plot: `${context.plotsDir}/hedged-latency.svg`
    }
  }
}

export const hedgedTail: Scenario = { name: 'hedged-tail', run }
