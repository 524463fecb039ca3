/**
 * The zero-overhead limit of the hedging schedule: what a service that costs no time at all would achieve
 * against the simulator's profile. A Monte-Carlo simulation of the schedule (SPEC §2 "Hedging"):
 * attempt 1 at 0 ms; if it has not succeeded by the hedge delay, or as soon as it fails before then, the
 * hedges start together; the first success wins; nothing after the timeout counts.
 *
 * Each attempt's fate is drawn like the simulator draws it (same shares and delays, see SimulatorProfile),
 * but independently rather than from its seeded sequence: the limit is a property of the distribution.
 */
import type { SimulatorProfile } from '../simulator/simulator.js'
import { ascending, quantile } from './stats.js'

export interface Schedule {
  hedgeDelayMs: number
  hedgeRequests: number
  timeoutMs: number
}

export interface ScheduleLimit {
  trials: number
  successRate: number
  p50Ms: number
  p90Ms: number
  p99Ms: number
  /** Share of requests whose hedges went out. */
  hedgedShare: number
  /** Upstream attempts per request. */
  attemptsPerRequest: number
  /** Every success's latency, ascending (for the CDF plot). */
  successLatenciesMs: number[]
}

/** When one attempt ends, counted from its own start, and whether it succeeded; a hang never ends. */
interface AttemptFate {
  endsAfterMs: number
  ok: boolean
}

function drawFate (profile: SimulatorProfile, random: () => number): AttemptFate {
  const roll = random()
  const delayMs = profile.minDelayMs + Math.floor(random() * (profile.maxDelayMs - profile.minDelayMs + 1))
  if (roll < profile.hangRate) return { endsAfterMs: Number.POSITIVE_INFINITY, ok: false }
  // 500s and non-JSON bodies arrive after the drawn delay too; only a 200 with JSON is a success.
  return { endsAfterMs: delayMs, ok: roll >= profile.hangRate + profile.errorRate + profile.invalidJsonRate }
}

/** How one client request went: when its first success came (+Infinity when none did), and whether it hedged. */
interface RequestFate {
  successMs: number
  hedged: boolean
}

function requestFate (profile: SimulatorProfile, schedule: Schedule, random: () => number): RequestFate {
  const first = drawFate(profile, random)
  if (first.ok && first.endsAfterMs <= schedule.hedgeDelayMs) return { successMs: first.endsAfterMs, hedged: false }
  let best = first.ok ? first.endsAfterMs : Number.POSITIVE_INFINITY
  // An early failure starts the hedges at once: waiting for the timer would only add latency.
  const hedgesStartMs = first.endsAfterMs < schedule.hedgeDelayMs ? first.endsAfterMs : schedule.hedgeDelayMs
  // Hedges due at or after the deadline are never sent.
  const hedged = schedule.hedgeRequests > 0 && hedgesStartMs < schedule.timeoutMs
  if (!hedged) return { successMs: best, hedged }
  for (let hedge = 0; hedge < schedule.hedgeRequests; hedge++) {
    const fate = drawFate(profile, random)
    if (fate.ok) best = Math.min(best, hedgesStartMs + fate.endsAfterMs)
  }
  return { successMs: best, hedged }
}

/**
 * The delay HEDGE_POLICY=adaptive settles on against a profile: the nearest-rank `quantile` of its successful
 * attempts' latencies, which are drawn uniformly from whole milliseconds minDelayMs…maxDelayMs.
 */
export function adaptiveHedgeDelayMs (profile: SimulatorProfile, quantile: number): number {
  const span = profile.maxDelayMs - profile.minDelayMs + 1
  return profile.minDelayMs + Math.max(Math.ceil(quantile * span) - 1, 0)
}

/**
 * A small seeded generator (splitmix32 finaliser over a Weyl sequence): with a fixed seed the limit is the
 * same number in every run, so a change in the gap is always a change of the service.
 */
function seededRandom (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9E3779B9) >>> 0
    let mixed = Math.imul(state ^ (state >>> 16), 0x85EBCA6B)
    mixed = Math.imul(mixed ^ (mixed >>> 13), 0xC2B2AE35)
    return ((mixed ^ (mixed >>> 16)) >>> 0) / 4294967296
  }
}

const LIMIT_SEED = 1

export function scheduleLimit (profile: SimulatorProfile, schedule: Schedule, trials = 1_000_000, random = seededRandom(LIMIT_SEED)): ScheduleLimit {
  const successes: number[] = []
  let hedgedRequests = 0
  for (let trial = 0; trial < trials; trial++) {
    const { successMs, hedged } = requestFate(profile, schedule, random)
    if (successMs <= schedule.timeoutMs) successes.push(successMs)
    if (hedged) hedgedRequests++
  }
  const sorted = ascending(successes)
  const hedgedShare = hedgedRequests / trials
  return {
    trials,
    successRate: sorted.length / trials,
    p50Ms: quantile(sorted, 0.5),
    p90Ms: quantile(sorted, 0.9),
    p99Ms: quantile(sorted, 0.99),
    hedgedShare,
    attemptsPerRequest: 1 + hedgedShare * schedule.hedgeRequests,
    successLatenciesMs: sorted
  }
}
