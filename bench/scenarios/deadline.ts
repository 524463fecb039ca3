/**
 * Deadline under load: the upstream accepts every connection and never answers, so every request must end in
 * a 408 at its deadline, however many arrive. Load is open-loop (bench/open-loop.ts). Each phase gets a fresh
 * upstream and a fresh service, so descriptors and memory have a clean baseline.
 *
 *   (a) 500 req/s for 5 s, timeout=300: one attempt each
 *   (b) 1000 req/s for 5 s, timeout=1000: three attempts each, ~3000 upstream sockets open at once
 *   (c) 200 requests at the same instant on 200 open, warmed keep-alive connections
 *   (d) 3× the rate the service sustains (found by a short ramp first), load shedding on as by default
 *   (d+) the same with the opt-in OVERLOAD_HOLD_HEDGES: no hedging while shedding
 *
 * (a)–(c) run with shedding off to measure the deadline itself.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { statusOf, type Answer } from '../http-client.js'
import { runBurst, runOpenLoop, warmUp, type LoadRun } from '../open-loop.js'
import { REPO_ROOT, sampleProcess, startPeakSampler, type ProcessSample } from '../processes.js'
import { counts, integer, mib, ms, percent, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { smartUrl, startService, type ServerUnderTest } from '../service.js'
import { countBy, distribution, type Distribution } from '../stats.js'
import { histogram } from '../svg.js'
import { startUpstream } from '../upstreams.js'

const SHEDDING_OFF = { OVERLOAD_MAX_WAIT_MS: '0' }
/** (d+): the opt-in overload setting. */
const OPT_IN_OVERLOAD_SETTINGS = { OVERLOAD_HOLD_HEDGES: 'true' }
const PHASE_SECONDS = 5
/** How long after the load the service gets to release what it held before "after" is sampled. */
const SETTLE_AFTER_MS = 2000
/** Answers later than this past the deadline count as late in (d). */
const LATE_MS = 100
/** A 503 within this time of sending counts as immediate shedding. */
const IMMEDIATE_MS = 100
/** The descriptors the service may hold after the load beyond its baseline and still count as "back". */
const FD_SLACK = 2
/** The load generator is one Node process: beyond this its own lag would be measured, not the service's. */
const MAX_GENERATOR_RATE = 6000
/** Steps of the ramp that finds the sustainable rate for (d). */
const RAMP_RATES = [100, 250, 500, 1000, 1500, 2000, 3000, 4000]
const RAMP_STEP_MS = 1500

interface PhaseResult {
  key: string
  label: string
  timeoutMs: number
  sent: number
  statuses: Record<string, number>
  /** answer time − timeout over every request that got an HTTP answer, in ms. */
  overshoot: Distribution
  /** The same over the 408s only. */
  overshoot408: Distribution
  /** Time to the 503 of shed requests. */
  shedLatency: Distribution
  /** Answers later than the deadline by more than LATE_MS, whatever their status. */
  lateAnswers: number
  /** 408s within LATE_MS of the deadline. */
  onTime408: number
  /** 503s within IMMEDIATE_MS of sending. */
  immediate503: number
  upstreamAttemptsPerRequest: number
  upstreamOpenSocketsAfter: number
  reusedConnections: number
  maxScheduleLagMs: number
  generatorLagMaxMs: number
  before: ProcessSample
  peak: ProcessSample
  after: ProcessSample
}

interface PhaseSpec {
  key: string
  label: string
  timeoutMs: number
  /** The service's environment beyond its defaults (e.g. SHEDDING_OFF). */
  env: Record<string, string>
  load (service: ServerUnderTest): Promise<LoadRun>
}

/** One phase: fresh upstream and service, warm-up, baseline, load, settle, and what /proc saw throughout. */
async function runPhase (context: ScenarioContext, spec: PhaseSpec): Promise<PhaseResult> {
  context.progress(`deadline (${spec.key}): ${spec.label}`)
  const upstream = await startUpstream('silent')
  try {
    const service = await startService({
      upstreamUrl: upstream.url,
      env: spec.env,
      profileName: profileName(context, `deadline-${spec.key}`)
    })
    try {
      await warmUp(smartUrl(service, 100))
      await sleep(500)
      const before = await sampleProcess(service.pid)
      const attemptsBefore = (await upstream.counters()).requests
      const sampler = startPeakSampler(service.pid)
      const run = await spec.load(service)
      const peak = await sampler.stop()
      await sleep(SETTLE_AFTER_MS)
      const after = await sampleProcess(service.pid)
      const upstreamAfter = await upstream.counters()
      return summarize(spec, run, { before, peak, after }, upstreamAfter.requests - attemptsBefore, upstreamAfter.openSockets)
    } finally {
      await service.stop()
    }
  } finally {
    await upstream.stop()
  }
}

function summarize (
  spec: PhaseSpec,
  run: LoadRun,
  samples: { before: ProcessSample, peak: ProcessSample, after: ProcessSample },
  upstreamAttempts: number,
  upstreamOpenSockets: number
): PhaseResult {
  const answered = run.answers.filter((answer) => answer.status !== 0)
  const overshootOf = (answer: Answer): number => answer.latencyMs - spec.timeoutMs
  return {
    key: spec.key,
    label: spec.label,
    timeoutMs: spec.timeoutMs,
    sent: run.answers.length,
    statuses: countBy(run.answers, statusOf),
    overshoot: distribution(answered.map(overshootOf)),
    overshoot408: distribution(answered.filter((answer) => answer.status === 408).map(overshootOf)),
    shedLatency: distribution(answered.filter((answer) => answer.status === 503).map((answer) => answer.latencyMs)),
    lateAnswers: answered.filter((answer) => overshootOf(answer) > LATE_MS).length,
    onTime408: answered.filter((answer) => answer.status === 408 && overshootOf(answer) <= LATE_MS).length,
    immediate503: answered.filter((answer) => answer.status === 503 && answer.latencyMs <= IMMEDIATE_MS).length,
    upstreamAttemptsPerRequest: upstreamAttempts / run.answers.length,
    upstreamOpenSocketsAfter: upstreamOpenSockets,
    reusedConnections: run.answers.filter((answer) => answer.reusedSocket).length,
    maxScheduleLagMs: run.maxScheduleLagMs,
    generatorLagMaxMs: run.generatorLagMaxMs,
    ...samples
  }
}

function openLoop (rate: number, timeoutMs: number, durationMs = PHASE_SECONDS * 1000) {
  return (service: ServerUnderTest): Promise<LoadRun> =>
    runOpenLoop({ url: smartUrl(service, timeoutMs), ratePerSecond: rate, durationMs, maxWaitMs: timeoutMs + 10_000 })
}

/** The ramp: the highest rate at which every answer was a 408 and p99 of its lateness ≤ LATE_MS. */
async function findSustainableRate (context: ScenarioContext): Promise<{ rate: number, steps: Array<{ rate: number, met: boolean, p99: number }> }> {
  context.progress(`deadline (d): ramp ${RAMP_RATES.join(', ')} req/s, ${RAMP_STEP_MS} ms each, to find the sustainable rate`)
  const upstream = await startUpstream('silent')
  const steps: Array<{ rate: number, met: boolean, p99: number }> = []
  try {
    const service = await startService({ upstreamUrl: upstream.url, env: SHEDDING_OFF })
    try {
      await warmUp(smartUrl(service, 100))
      for (const rate of RAMP_RATES) {
        const run = await runOpenLoop({ url: smartUrl(service, 1000), ratePerSecond: rate, durationMs: RAMP_STEP_MS, maxWaitMs: 4000 })
        const all408 = run.answers.every((answer) => answer.status === 408)
        const p99 = distribution(run.answers.map((answer) => answer.latencyMs - 1000)).p99
        steps.push({ rate, met: all408 && p99 <= LATE_MS, p99 })
        context.progress(`  ${rate} req/s: ${counts(countBy(run.answers, statusOf))}, lateness p99 ${ms(p99)} ms`)
        if (!all408 || p99 > LATE_MS) break
        await sleep(500)
      }
    } finally {
      await service.stop()
    }
  } finally {
    await upstream.stop()
  }
  const sustained = steps.filter((step) => step.met).map((step) => step.rate)
  return { rate: Math.max(RAMP_RATES[0] as number, ...sustained), steps }
}

function fdsBack (phase: PhaseResult): Target {
  return {
    name: `(${phase.key}) descriptors back to baseline (≤ +${FD_SLACK})`,
    measured: `${phase.before.fds} → ${phase.after.fds}`,
    met: phase.after.fds <= phase.before.fds + FD_SLACK
  }
}

function all408 (phase: PhaseResult): Target {
  const count = phase.statuses['408'] ?? 0
  return { name: `(${phase.key}) every answer 408`, measured: `${count}/${phase.sent}`, met: count === phase.sent }
}

function overshootAtMost (phase: PhaseResult, quantileName: 'p99' | 'max', limitMs: number): Target {
  const value = phase.overshoot[quantileName]
  return { name: `(${phase.key}) overshoot ${quantileName} ≤ ${limitMs} ms`, measured: `${ms(value)} ms`, met: value <= limitMs }
}

function overloadTargets (phase: PhaseResult): Target[] {
  return [
    {
      name: `(${phase.key}) every answer a 408 within ${LATE_MS} ms or an immediate 503 (≤ ${IMMEDIATE_MS} ms)`,
      measured: `${phase.onTime408} + ${phase.immediate503} of ${phase.sent}`,
      met: phase.onTime408 + phase.immediate503 === phase.sent
    },
    { name: `(${phase.key}) no answer late by > ${LATE_MS} ms`, measured: String(phase.lateAnswers), met: phase.lateAnswers === 0 }
  ]
}

function phaseTable (phases: readonly PhaseResult[]): string {
  const overshootRows = phases.map((phase) => [
    `(${phase.key}) ${phase.label}`,
    String(phase.sent),
    ms(phase.overshoot.p50),
    ms(phase.overshoot.p90),
    ms(phase.overshoot.p99),
    ms(phase.overshoot.max),
    phase.upstreamAttemptsPerRequest.toFixed(2),
    counts(phase.statuses)
  ])
  const resourceRows = phases.map((phase) => [
    `(${phase.key})`,
    `${phase.before.fds} / ${phase.peak.fds} / ${phase.after.fds}`,
    `${mib(phase.before.rssBytes)} / ${mib(phase.peak.rssBytes)} / ${mib(phase.after.rssBytes)}`,
    String(phase.upstreamOpenSocketsAfter),
    ms(phase.maxScheduleLagMs),
    ms(phase.generatorLagMaxMs)
  ])
  return [
    table('deadline under load: answer time − timeout (ms, client-side, every HTTP answer)',
      ['phase', 'sent', 'p50', 'p90', 'p99', 'max', 'upstream calls/req', 'answers by status (or client error)'], overshootRows),
    table('deadline under load: the service\'s resources (before / peak during / 2 s after) and the load generator',
      ['phase', 'open fds', 'RSS MiB', 'upstream sockets left open', 'send lag max ms', 'generator loop lag max ms'], resourceRows)
  ].join('\n\n')
}

function overloadTable (phases: readonly PhaseResult[], sustainableRate: number, ramp: ReadonlyArray<{ rate: number, met: boolean, p99: number }>): string {
  const rows: Array<[string, (phase: PhaseResult) => string]> = [
    ['share of 503 (shed)', (phase) => percent((phase.statuses['503'] ?? 0) / phase.sent)],
    [`408s within ${LATE_MS} ms of the deadline`, (phase) => `${phase.onTime408} of ${phase.statuses['408'] ?? 0}`],
    [`503s within ${IMMEDIATE_MS} ms`, (phase) => `${phase.immediate503} of ${phase.statuses['503'] ?? 0}`],
    ['503 answer time p50 / p99 / max ms', (phase) => `${ms(phase.shedLatency.p50)} / ${ms(phase.shedLatency.p99)} / ${ms(phase.shedLatency.max)}`],
    ['408 lateness p50 / p99 / max ms', (phase) => `${ms(phase.overshoot408.p50)} / ${ms(phase.overshoot408.p99)} / ${ms(phase.overshoot408.max)}`],
    [`answers late by > ${LATE_MS} ms`, (phase) => integer(phase.lateAnswers)]
  ]
  const rampText = ramp.map((step) => `${step.rate}: ${ms(step.p99)} ms${step.met ? '' : ' ✗'}`).join(', ')
  return table(`deadline (d): overload at 3 × the sustainable ${sustainableRate} req/s (ramp, rate: lateness p99: ${rampText})`,
    ['measure', ...phases.map((phase) => `(${phase.key}) ${phase.label}`)],
    rows.map(([measure, value]) => [measure, ...phases.map(value)]))
}

/** A round bin width (1, 2 or 5 × 10^n ms) that cuts the range into at most about 60 bins. */
function binWidthFor (rangeMs: number): number {
  const rough = rangeMs / 60
  const power = 10 ** Math.floor(Math.log10(rough))
  return [1, 2, 5, 10].map((factor) => factor * power).find((width) => width >= rough) ?? rough
}

/** Histogram of (b)'s lateness, with the target and the measured p99 marked. */
function overshootPlot (phase: PhaseResult, lateness: readonly number[]): string {
  const low = Math.min(0, ...lateness)
  const high = Math.max(60, ...lateness)
  const binWidth = binWidthFor(high - low)
  const binStart = Math.floor(low / binWidth) * binWidth
  const binCount = Math.floor((high - binStart) / binWidth) + 1
  const binCounts = new Array<number>(binCount).fill(0)
  for (const value of lateness) {
    const bin = Math.floor((value - binStart) / binWidth)
    binCounts[bin] = (binCounts[bin] ?? 0) + 1
  }
  return histogram({
    title: 'Deadline overshoot under load, phase (b)',
    subtitle: `open loop, 1000 req/s for ${PHASE_SECONDS} s, timeout=1000 ms, never-answering upstream: ${lateness.length} answers of ${phase.sent} requests`,
    xLabel: `answer time − timeout (ms), bins of ${binWidth} ms`,
    yLabel: 'answers',
    binStart,
    binWidth,
    counts: binCounts,
    barLabel: 'answers',
    barColor: '#4477aa',
    markers: [
      { x: 50, label: 'target p99 ≤ 50 ms', color: '#cc3311' },
      { x: phase.overshoot.p99, label: `measured p99 ${ms(phase.overshoot.p99)} ms`, color: '#222222' }
    ]
  })
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  const phases: PhaseResult[] = []
  let latenessB: number[] = []
  const keepLatenessB = async (service: ServerUnderTest): Promise<LoadRun> => {
    const loadRun = await openLoop(1000, 1000)(service)
    latenessB = loadRun.answers.filter((answer) => answer.status !== 0).map((answer) => answer.latencyMs - 1000)
    return loadRun
  }
  phases.push(await runPhase(context, { key: 'a', label: '500 req/s, timeout=300', timeoutMs: 300, env: SHEDDING_OFF, load: openLoop(500, 300) }))
  phases.push(await runPhase(context, { key: 'b', label: '1000 req/s, timeout=1000', timeoutMs: 1000, env: SHEDDING_OFF, load: keepLatenessB }))
  phases.push(await runPhase(context, {
    key: 'c',
    label: 'burst of 200 on open connections, timeout=1000',
    timeoutMs: 1000,
    env: SHEDDING_OFF,
    load: (service) => runBurst({ url: smartUrl(service, 1000), warmUrl: new URL('/health', service.origin), count: 200, maxWaitMs: 11_000 })
  }))
  const ramp = await findSustainableRate(context)
  const overloadRate = Math.min(MAX_GENERATOR_RATE, 3 * ramp.rate)
  const phaseD = await runPhase(context, {
    key: 'd',
    label: `${overloadRate} req/s, timeout=1000, shedding as by default`,
    timeoutMs: 1000,
    env: {},
    load: openLoop(overloadRate, 1000)
  })
  const phaseDPlus = await runPhase(context, {
    key: 'd+',
    label: `${overloadRate} req/s, timeout=1000, + OVERLOAD_HOLD_HEDGES=true`,
    timeoutMs: 1000,
    env: OPT_IN_OVERLOAD_SETTINGS,
    load: openLoop(overloadRate, 1000)
  })
  phases.push(phaseD, phaseDPlus)
  const [a, b, c] = phases as [PhaseResult, PhaseResult, PhaseResult]
  const targets: Target[] = [
    all408(a), overshootAtMost(a, 'p99', 10), overshootAtMost(a, 'max', 30), fdsBack(a),
    all408(b), overshootAtMost(b, 'p99', 50), fdsBack(b),
    all408(c), overshootAtMost(c, 'p99', 100), fdsBack(c),
    ...overloadTargets(phaseD), fdsBack(phaseD),
    ...overloadTargets(phaseDPlus), fdsBack(phaseDPlus)
  ]
  const plot = `${context.plotsDir}/deadline-overshoot.svg`
  await mkdir(join(REPO_ROOT, context.plotsDir), { recursive: true })
  await writeFile(join(REPO_ROOT, plot), overshootPlot(b, latenessB))
  const notes = `(c) went out on ${c.reusedConnections} of ${c.sent} already-open connections; ` +
    `(d) and (d+) ran at ${overloadRate} req/s = min(3 × ${ramp.rate}, ${MAX_GENERATOR_RATE}).`
  return {
    tables: [phaseTable(phases), overloadTable([phaseD, phaseDPlus], ramp.rate, ramp.steps), notes],
    targets,
    results: { phases, ramp, overloadRate, plot }
  }
}

export const deadline: Scenario = { name: 'deadline', run }
