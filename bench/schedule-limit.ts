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

/** Time of the first success of one client request, or +Infinity when none comes. */
function firstSuccessMs (profile: SimulatorProfile, schedule: Schedule, random: () => number): number {
  const first = drawFate(profile, random)
  if (first.ok && first.endsAfterMs <= schedule.hedgeDelayMs) return first.endsAfterMs
  let best = first.ok ? first.endsAfterMs : Number.POSITIVE_INFINITY
  // An early failure starts the hedges at once: waiting for the timer would only add latency.
  const hedgesStartMs = first.endsAfterMs < schedule.hedgeDelayMs ? first.endsAfterMs : schedule.hedgeDelayMs
  for (let hedge = 0; hedge < schedule.hedgeRequests; hedge++) {
    const fate = drawFate(profile, random)
    if (fate.ok) best = Math.min(best, hedgesStartMs + fate.endsAfterMs)
  }
  return best
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
  for (let trial = 0; trial < trials; trial++) {
    const successMs = firstSuccessMs(profile, schedule, random)
    if (successMs <= schedule.timeoutMs) successes.push(successMs)
  }
  const sorted = ascending(successes)
  return {
    trials,
    successRate: sorted.length / trials,
    p50Ms: quantile(sorted, 0.5),
    p90Ms: quantile(sorted, 0.9),
    p99Ms: quantile(sorted, 0.99),
    successLatenciesMs: sorted
  }
}
