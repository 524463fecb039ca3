/**
 * Policies: each simulator profile (SIMULATOR_PROFILE) against HEDGE_POLICY=fixed and =adaptive, and against the
 * overloaded profile with upstream pushback honoured (MAX_PUSHBACK_MS, the default) and ignored (0). 30 closed-loop
 * clients on /api/smart. Beside each run, the zero-overhead limit of its schedule (bench/schedule-limit.ts), with
 * the delay the adaptive policy settles on against that profile; the overloaded profile has none, since how often
 * it sheds depends on the load the service itself sends.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { loadConfig } from '../../lib/config.js'
import { REFERENCE_HEDGE_DELAY_MS, REFERENCE_HEDGE_REQUESTS } from '../../lib/constants.js'
import { SIMULATOR_PROFILES, type SimulatorProfile, type SimulatorProfileName } from '../../simulator/simulator.js'
import { sample } from '../../test/helpers/prometheus.js'
import { runClosedLoop } from '../closed-loop.js'
import { statusOf, unlimitedPool } from '../http-client.js'
import { REPO_ROOT } from '../processes.js'
import { counts, ms, percent, ratio, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { adaptiveHedgeDelayMs, scheduleLimit, type ScheduleLimit } from '../schedule-limit.js'
import { readMetrics, startService, type ServerUnderTest } from '../service.js'
import { ascending, countBy, distribution, type Distribution } from '../stats.js'
import { scatterChart, type ScatterPoint } from '../svg.js'
import { startUpstream, type UpstreamProcess } from '../upstreams.js'

/** Long enough that the slow profile's answers (up to 1.2 s) all count, so that every policy is judged on them. */
const TIMEOUT_MS = 2000
const CLIENTS = 30
/** HEDGE_QUANTILE as the service ships it: the service runs with its default, and the expectations use the same. */
const QUANTILE = loadConfig({}).HEDGE_QUANTILE
const WARM_UP_MS = 4000
const MAX_REQUESTS = 1500
const MAX_DURATION_MS = 25_000
/** An answer later than the timeout by more than this is late. */
const LATE_MS = 10
const PUSHBACK_ON_MS = '30000'

type Policy = 'fixed' | 'adaptive'

interface Configuration {
  profile: SimulatorProfileName
  policy: Policy
  /** MAX_PUSHBACK_MS > 0. Only the overloaded profile ever pushes back; the others run with the default (on). */
  pushback: boolean
}

const CONFIGURATIONS: readonly Configuration[] = [
  ...(['exponea', 'slow', 'fast'] as const).flatMap((profile) => (['fixed', 'adaptive'] as const).map((policy) => ({ profile, policy, pushback: true }))),
  ...(['fixed', 'adaptive'] as const).flatMap((policy) => [true, false].map((pushback) => ({ profile: 'overloaded' as const, policy, pushback })))
]

interface PolicyRun extends Configuration {
  requests: number
  successRate: number
  success: Distribution
  upstreamCallsPerRequest: number
  hedgedShare: number
  /** What hedgedShare should be if the delay sat at its target (see expectedHedgedShare). */
  expectedHedgedShare: number
  hedgeWinShare: number
  /** The hedge delay in force at the end of the run (smart_hedge_delay_seconds). */
  hedgeDelayMs: number
  /** Share of first attempts the upstream shed with 503 (overloaded only). */
  firstAttemptsShedShare: number
  hedgesHeldBack: Record<string, number>
  lateAnswers: number
  /** Answers at the deadline the service itself sent more than LATE_MS late (its smart_deadline_overshoot_seconds). */
  lateAnswersByTheService: number
  statuses: Record<string, number>
  limit: { hedgeDelayMs: number, successRate: number, p50Ms: number, p90Ms: number, p99Ms: number, hedgedShare: number, attemptsPerRequest: number } | null
  generatorLagMaxMs: number
}

function label (configuration: Configuration): string {
  const pushback = configuration.profile === 'overloaded' ? `, pushback ${configuration.pushback ? 'on' : 'off'}` : ''
  return `${configuration.profile} / ${configuration.policy}${pushback}`
}

/** The delay a policy aims at against a profile: HEDGE_DELAY_MS, or the q quantile of its successes' latencies. */
function targetDelayMs (profile: SimulatorProfile, policy: Policy): number {
  return policy === 'fixed' ? REFERENCE_HEDGE_DELAY_MS : adaptiveHedgeDelayMs(profile, QUANTILE)
}

/** Share of a profile's attempts that do not succeed: hangs, 500s and bodies that are not JSON. */
function failureShare (profile: SimulatorProfile): number {
  return profile.hangRate + profile.errorRate + profile.invalidJsonRate
}

/**
 * The share of calls that should send hedges. Every call whose first attempt does not succeed hedges (at once when
 * it fails early, at the delay otherwise); of the others, those slower than the delay: 1 − q of them with the
 * adaptive policy, whatever the upstream's speed, and the profile's share above HEDGE_DELAY_MS with the fixed one.
 * A first attempt the overloaded upstream sheds fails at once; `shedShare` is measured at the upstream.
 */
function expectedHedgedShare (profile: SimulatorProfile, policy: Policy, shedShare: number): number {
  const failing = shedShare + (1 - shedShare) * failureShare(profile)
  const span = profile.maxDelayMs - profile.minDelayMs + 1
  const slowerThanDelay = policy === 'adaptive'
    ? 1 - QUANTILE
    : Math.min(Math.max((profile.maxDelayMs - REFERENCE_HEDGE_DELAY_MS) / span, 0), 1)
  return failing + (1 - failing) * slowerThanDelay
}

interface Snapshot {
  upstreamCalls: number
  firstAttempts: number
  firstAttemptsShed: number
  metrics: string
}

async function snapshot (upstream: UpstreamProcess, service: ServerUnderTest): Promise<Snapshot> {
  const [counters, metrics] = await Promise.all([upstream.counters(), readMetrics(service.origin)])
  return { upstreamCalls: counters.requests, firstAttempts: counters.firstAttempts, firstAttemptsShed: counters.firstAttemptsShed, metrics }
}

function metricDelta (before: Snapshot, after: Snapshot, series: string): number {
  return sample(after.metrics, series) - sample(before.metrics, series)
}

const HOLD_BACK_REASONS = ['pushback', 'overload', 'budget', 'hopeless'] as const

async function runOnce (context: ScenarioContext, configuration: Configuration, limit: ScheduleLimit | null): Promise<PolicyRun> {
  context.progress(`policies: ${label(configuration)}: up to ${MAX_REQUESTS} requests or ${MAX_DURATION_MS / 1000} s`)
  const profile = SIMULATOR_PROFILES[configuration.profile]
  const upstream = await startUpstream('simulator', configuration.profile)
  try {
    const service = await startService({
      upstreamUrl: upstream.url,
      env: { HEDGE_POLICY: configuration.policy, MAX_PUSHBACK_MS: configuration.pushback ? PUSHBACK_ON_MS : '0' },
      profileName: profileName(context, `policies-${configuration.profile}-${configuration.policy}-pushback-${configuration.pushback ? 'on' : 'off'}`)
    })
    try {
      const url = new URL(`/api/smart?timeout=${TIMEOUT_MS}`, service.origin)
      // The warm-up fills the adaptive policy's window, brings the overloaded upstream to its steady state, and
      // opens the clients' connections: this scenario is about the policies, not about 30 connections opening at
      // once (the yardstick's deadline phases are).
      const agent = unlimitedPool()
      await runClosedLoop({ url, clients: CLIENTS, maxRequests: Number.MAX_SAFE_INTEGER, maxDurationMs: WARM_UP_MS, agent })
      const before = await snapshot(upstream, service)
      const { answers, generatorLagMaxMs } = await runClosedLoop({ url, clients: CLIENTS, maxRequests: MAX_REQUESTS, maxDurationMs: MAX_DURATION_MS, agent })
      agent.destroy()
      const after = await snapshot(upstream, service)
      const successLatencies = ascending(answers.filter((answer) => answer.status === 200).map((answer) => answer.latencyMs))
      const firstAttempts = after.firstAttempts - before.firstAttempts
      const shedShare = firstAttempts === 0 ? 0 : (after.firstAttemptsShed - before.firstAttemptsShed) / firstAttempts
      return {
        ...configuration,
        requests: answers.length,
        successRate: successLatencies.length / answers.length,
        success: distribution(successLatencies),
        upstreamCallsPerRequest: (after.upstreamCalls - before.upstreamCalls) / answers.length,
        hedgedShare: metricDelta(before, after, 'smart_hedges_total') / answers.length,
        expectedHedgedShare: expectedHedgedShare(profile, configuration.policy, shedShare),
        hedgeWinShare: metricDelta(before, after, 'smart_hedge_wins_total') / answers.length,
        hedgeDelayMs: sample(after.metrics, 'smart_hedge_delay_seconds') * 1000,
        firstAttemptsShedShare: shedShare,
        hedgesHeldBack: Object.fromEntries(HOLD_BACK_REASONS
          .map((reason) => [reason, metricDelta(before, after, `smart_hedges_throttled_total{reason="${reason}"}`)] as const)
          .filter(([, held]) => held > 0)),
        lateAnswers: answers.filter((answer) => answer.latencyMs > TIMEOUT_MS + LATE_MS).length,
        lateAnswersByTheService: metricDelta(before, after, 'smart_deadline_overshoot_seconds_count{endpoint="smart"}') -
          metricDelta(before, after, `smart_deadline_overshoot_seconds_bucket{le="${LATE_MS / 1000}",endpoint="smart"}`),
        statuses: countBy(answers, statusOf),
        limit: limit === null
          ? null
          : {
              hedgeDelayMs: targetDelayMs(profile, configuration.policy),
              successRate: limit.successRate,
              p50Ms: limit.p50Ms,
              p90Ms: limit.p90Ms,
              p99Ms: limit.p99Ms,
              hedgedShare: limit.hedgedShare,
              attemptsPerRequest: limit.attemptsPerRequest
            },
        generatorLagMaxMs
      }
    } finally {
      await service.stop()
    }
  } finally {
    await upstream.stop()
  }
}

/** The zero-overhead limit of a policy's schedule against a profile; none for the overloaded one (see above). */
function limitOf (configuration: Configuration): ScheduleLimit | null {
  if (configuration.profile === 'overloaded') return null
  const profile = SIMULATOR_PROFILES[configuration.profile]
  return scheduleLimit(profile, { hedgeDelayMs: targetDelayMs(profile, configuration.policy), hedgeRequests: REFERENCE_HEDGE_REQUESTS, timeoutMs: TIMEOUT_MS }, 200_000)
}

function find (runs: readonly PolicyRun[], wanted: Configuration): PolicyRun | undefined {
  return runs.find((run) => run.profile === wanted.profile && run.policy === wanted.policy && run.pushback === wanted.pushback)
}

const HEDGED_SHARE_TOLERANCE = 0.05

function targetsOf (runs: readonly PolicyRun[]): Target[] {
  const targets: Target[] = []
  const slowFixed = find(runs, { profile: 'slow', policy: 'fixed', pushback: true })
  const slowAdaptive = find(runs, { profile: 'slow', policy: 'adaptive', pushback: true })
  if (slowFixed !== undefined && slowAdaptive !== undefined) {
    const calls = slowAdaptive.upstreamCallsPerRequest / slowFixed.upstreamCallsPerRequest
    const p90 = slowAdaptive.success.p90 / slowFixed.success.p90
    targets.push(
      { name: 'slow: adaptive sends ≤ 0.75× the upstream calls of fixed', measured: `${ratio(calls)} (${slowAdaptive.upstreamCallsPerRequest.toFixed(2)} vs ${slowFixed.upstreamCallsPerRequest.toFixed(2)})`, met: calls <= 0.75 },
      { name: 'slow: adaptive p90 of successes ≤ 1.15× fixed\'s', measured: `${ratio(p90)} (${ms(slowAdaptive.success.p90, 0)} vs ${ms(slowFixed.success.p90, 0)} ms)`, met: p90 <= 1.15 }
    )
  }
  const fastFixed = find(runs, { profile: 'fast', policy: 'fixed', pushback: true })
  const fastAdaptive = find(runs, { profile: 'fast', policy: 'adaptive', pushback: true })
  if (fastFixed !== undefined && fastAdaptive !== undefined) {
    const gain = fastFixed.success.p99 - fastAdaptive.success.p99
    targets.push({ name: 'fast: adaptive p99 of successes ≥ 100 ms below fixed\'s', measured: `${ms(gain, 0)} ms below (${ms(fastAdaptive.success.p99, 0)} vs ${ms(fastFixed.success.p99, 0)} ms)`, met: gain >= 100 })
  }
  // Pushback holds hedges back by design, so the share is judged where nothing else does.
  for (const run of runs.filter((candidate) => candidate.policy === 'adaptive' && !(candidate.profile === 'overloaded' && candidate.pushback))) {
    const gap = run.hedgedShare - run.expectedHedgedShare
    targets.push({
      name: `${label(run)}: share of hedged calls within ±5 points of failures + (1 − q) × the rest`,
      measured: `${percent(run.hedgedShare)} vs ${percent(run.expectedHedgedShare)}`,
      met: Math.abs(gap) <= HEDGED_SHARE_TOLERANCE
    })
  }
  for (const policy of ['fixed', 'adaptive'] as const) {
    const honoured = find(runs, { profile: 'overloaded', policy, pushback: true })
    const ignored = find(runs, { profile: 'overloaded', policy, pushback: false })
    if (honoured === undefined || ignored === undefined) continue
    const cut = 1 - honoured.upstreamCallsPerRequest / ignored.upstreamCallsPerRequest
    const successDrop = ignored.successRate - honoured.successRate
    targets.push(
      { name: `overloaded / ${policy}: pushback cuts upstream calls per request by ≥ 40%`, measured: `${percent(cut)} (${honoured.upstreamCallsPerRequest.toFixed(2)} vs ${ignored.upstreamCallsPerRequest.toFixed(2)})`, met: cut >= 0.4 },
      { name: `overloaded / ${policy}: with pushback, success rate at most 2 points lower`, measured: `${percent(honoured.successRate)} vs ${percent(ignored.successRate)}`, met: successDrop <= 0.02 }
    )
  }
  const late = runs.reduce((total, run) => total + run.lateAnswers, 0)
  const lateByTheService = runs.reduce((total, run) => total + run.lateAnswersByTheService, 0)
  targets.push({
    name: `policies: no answer later than timeout + ${LATE_MS} ms`,
    measured: `${late} (${lateByTheService} by the service's own clock)`,
    met: late === 0
  })
  return targets
}

const PROFILE_COLORS: Record<SimulatorProfileName, string> = { exponea: '#1f77b4', slow: '#d62728', fast: '#2ca02c', overloaded: '#9467bd' }

function costPlot (runs: readonly PolicyRun[]): string {
  const points: ScatterPoint[] = runs.flatMap((run) => {
    const color = PROFILE_COLORS[run.profile]
    const shape = run.policy === 'fixed' ? 'circle' as const : 'square' as const
    const name = run.profile === 'overloaded' ? `overloaded ${run.policy}${run.pushback ? '' : ', no pushback'}` : `${run.profile} ${run.policy}`
    // A profile's fixed and adaptive points can land close together: each label goes on the side away from the other.
    const pair = find(runs, { ...run, policy: run.policy === 'fixed' ? 'adaptive' : 'fixed' })
    const higher = pair === undefined || run.upstreamCallsPerRequest >= pair.upstreamCallsPerRequest
    const measured: ScatterPoint = { x: run.success.p90, y: run.upstreamCallsPerRequest, label: name, color, shape, labelPosition: higher ? 'above' : 'below' }
    return run.limit === null ? [measured] : [measured, { x: run.limit.p90Ms, y: run.limit.attemptsPerRequest, label: '', color, shape, hollow: true }]
  })
  return scatterChart({
    title: 'Policies: upstream calls per request against p90',
    subtitle: `/api/smart, ${CLIENTS} closed-loop clients, timeout=${TIMEOUT_MS} ms; adaptive at q=${QUANTILE}; colour: simulator profile`,
    xLabel: 'p90 of successful answers (ms)',
    yLabel: 'upstream calls per request',
    xMax: Math.ceil(Math.max(...points.map((point) => point.x)) / 100) * 100 + 300,
    yMin: 1,
    yMax: 3.2,
    formatY: (y) => y.toFixed(1),
    points,
    legend: [
      { label: 'fixed (HEDGE_DELAY_MS)', shape: 'circle' },
      { label: 'adaptive', shape: 'square' },
      { label: 'outline: zero-overhead limit', shape: 'circle', hollow: true }
    ]
  })
}

function resultsTable (runs: readonly PolicyRun[]): string {
  return table(
    `policies (/api/smart, ${CLIENTS} closed-loop clients, timeout=${TIMEOUT_MS}, q=${QUANTILE}; limit = the zero-overhead schedule at the delay each ` +
      'policy aims at, by simulation; expected hedged = failing first attempts + the rest slower than the delay)',
    ['profile / policy', 'requests', 'delay ms', 'limit', 'success', 'limit', 'p50 ms', 'p90 ms', 'limit', 'p99 ms', 'limit',
      'calls/req', 'limit', 'hedged', 'expected', 'hedge won', '1st shed', 'held back', 'late', 'by service', 'gen. lag max', 'answers by status'],
    runs.map((run) => [
      label(run),
      String(run.requests),
      ms(run.hedgeDelayMs, 0),
      ms(run.limit?.hedgeDelayMs ?? Number.NaN, 0),
      percent(run.successRate),
      percent(run.limit?.successRate ?? Number.NaN),
      ms(run.success.p50, 0),
      ms(run.success.p90, 0),
      ms(run.limit?.p90Ms ?? Number.NaN, 0),
      ms(run.success.p99, 0),
      ms(run.limit?.p99Ms ?? Number.NaN, 0),
      run.upstreamCallsPerRequest.toFixed(2),
      run.limit === null ? '-' : run.limit.attemptsPerRequest.toFixed(2),
      percent(run.hedgedShare),
      percent(run.expectedHedgedShare),
      percent(run.hedgeWinShare),
      percent(run.firstAttemptsShedShare),
      counts(run.hedgesHeldBack),
      String(run.lateAnswers),
      String(run.lateAnswersByTheService),
      ms(run.generatorLagMaxMs),
      counts(run.statuses)
    ])
  )
}

/** The quantiles the frontier table tries against the slow profile. */
const FRONTIER_QUANTILES = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]

interface FrontierPoint {
  quantile: number
  hedgeDelayMs: number
  p90Ms: number
  p90VsFixed: number
  attemptsPerRequest: number
  attemptsVsFixed: number
}

/**
 * What HEDGE_QUANTILE trades against the slow profile at zero overhead: fewer upstream calls for a later p90,
 * beside the fixed schedule. It shows which pairs of targets any quantile can meet at all.
 */
function slowFrontier (): FrontierPoint[] {
  const profile = SIMULATOR_PROFILES.slow
  const schedule = { hedgeRequests: REFERENCE_HEDGE_REQUESTS, timeoutMs: TIMEOUT_MS }
  const fixed = scheduleLimit(profile, { ...schedule, hedgeDelayMs: REFERENCE_HEDGE_DELAY_MS }, 200_000)
  return FRONTIER_QUANTILES.map((quantile) => {
    const hedgeDelayMs = adaptiveHedgeDelayMs(profile, quantile)
    const limit = scheduleLimit(profile, { ...schedule, hedgeDelayMs }, 200_000)
    return {
      quantile,
      hedgeDelayMs,
      p90Ms: limit.p90Ms,
      p90VsFixed: limit.p90Ms / fixed.p90Ms,
      attemptsPerRequest: limit.attemptsPerRequest,
      attemptsVsFixed: limit.attemptsPerRequest / fixed.attemptsPerRequest
    }
  })
}

function frontierTable (frontier: readonly FrontierPoint[]): string {
  return table(
    `policies: the slow profile's zero-overhead limit of HEDGE_POLICY=adaptive by HEDGE_QUANTILE, against fixed (timeout=${TIMEOUT_MS}, by simulation)`,
    ['q', 'delay ms', 'p90 ms', 'vs fixed', 'calls/req', 'vs fixed'],
    frontier.map((point) => [
      String(point.quantile),
      String(point.hedgeDelayMs),
      ms(point.p90Ms, 0),
      ratio(point.p90VsFixed),
      point.attemptsPerRequest.toFixed(2),
      ratio(point.attemptsVsFixed)
    ])
  )
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  const runs: PolicyRun[] = []
  for (const configuration of CONFIGURATIONS) {
    runs.push(await runOnce(context, configuration, limitOf(configuration)))
  }
  const plot = `${context.plotsDir}/policies-cost.svg`
  await mkdir(join(REPO_ROOT, context.plotsDir), { recursive: true })
  await writeFile(join(REPO_ROOT, plot), costPlot(runs))
  const frontier = slowFrontier()
  return { tables: [resultsTable(runs), frontierTable(frontier)], targets: targetsOf(runs), results: { runs, slowFrontier: frontier, plot } }
}

export const policies: Scenario = { name: 'policies', run }
