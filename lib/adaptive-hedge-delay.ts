/**
 * HEDGE_POLICY=adaptive (SPEC §2, "Hedging"): the hedge delay follows the upstream instead of a constant.
 *
 * The delay is the q quantile (HEDGE_QUANTILE) of the latencies of recent first attempts of /api/smart that
 * succeeded, so about 1 − q of the calls whose first attempt has not failed send hedges, whether the upstream
 * answers in 50 ms or in 1 s (Finagle's backup requests, Dean and Barroso's "tail at scale"). The samples are
 * first attempts only: they are what the delay is compared with, and the winners of a race (a hedge, the
 * fastest of /api/first's three) would bias the quantile down.
 *
 * The window holds the last WINDOW_SAMPLES samples of the last WINDOW_MS, so the delay follows an upstream
 * that slows down or speeds up within seconds, in both directions. Until it holds MIN_SAMPLES, the delay is
 * HEDGE_DELAY_MS; and it stays within [HEDGE_DELAY_MS / BOUND_RATIO, HEDGE_DELAY_MS × BOUND_RATIO], so that a
 * few odd seconds (a stalled upstream, a burst of cached answers) cannot make it absurd.
 *
 * The fastest success in the window also says when a hedge is hopeless: one sent with less time left than that
 * cannot finish before the deadline.
 */

/** Samples kept at most; enough for a stable 0.99 quantile, cheap to sort. */
export const WINDOW_SAMPLES = 512
/** How long a sample counts. */
export const WINDOW_MS = 10_000
/** Samples needed before the window decides; below that, HEDGE_DELAY_MS holds. */
export const MIN_SAMPLES = 20
/** How far from HEDGE_DELAY_MS the delay may move, as a factor either way. */
export const BOUND_RATIO = 10
/** The quantile is recomputed at most this often: sorting the window for every call would cost more than it tells. */
export const RECOMPUTE_EVERY_MS = 100

export interface AdaptiveHedgeDelayOptions {
  /** HEDGE_QUANTILE, between 0 and 1. */
  quantile: number
  /** HEDGE_DELAY_MS: the delay until the window has enough samples, and the centre of its bounds. */
  fallbackMs: number
  /** The clock samples are taken on (performance.now() by default). */
  now?: () => number
}

export class AdaptiveHedgeDelay {
  private readonly latencies = new Float64Array(WINDOW_SAMPLES)
  private readonly takenAt = new Float64Array(WINDOW_SAMPLES)
  /** Samples written so far; the newest is at (written - 1) % WINDOW_SAMPLES. */
  private written = 0
  private computedAt = Number.NEGATIVE_INFINITY
  private delay: number
  private fastest: number | undefined
  private readonly quantile: number
  private readonly fallbackMs: number
  private readonly now: () => number

  constructor ({ quantile, fallbackMs, now = () => performance.now() }: AdaptiveHedgeDelayOptions) {
    this.quantile = quantile
    this.fallbackMs = fallbackMs
    this.now = now
    this.delay = fallbackMs
  }

  /** A first attempt of /api/smart succeeded after `latencyMs`. */
  recordSuccess (latencyMs: number): void {
    const slot = this.written % WINDOW_SAMPLES
    this.latencies[slot] = latencyMs
    this.takenAt[slot] = this.now()
    this.written++
  }

  /** The hedge delay in force, in whole milliseconds. */
  delayMs (): number {
    this.refresh()
    return this.delay
  }

  /** The fastest success in the window, or undefined while it has too few samples to say. */
  fastestMs (): number | undefined {
    this.refresh()
    return this.fastest
  }

  private refresh (): void {
    const now = this.now()
    if (now - this.computedAt < RECOMPUTE_EVERY_MS) return
    this.computedAt = now
    const recent = this.recentLatencies(now)
    if (recent.length < MIN_SAMPLES) {
      this.delay = this.fallbackMs
      this.fastest = undefined
      return
    }
    recent.sort()
    // The nearest-rank quantile: the smallest sample with at least q of the samples at or below it.
    const rank = Math.max(Math.ceil(this.quantile * recent.length) - 1, 0)
    const lowest = Math.max(this.fallbackMs / BOUND_RATIO, 1)
    const highest = this.fallbackMs * BOUND_RATIO
    this.delay = Math.round(Math.min(Math.max(recent[rank] as number, lowest), highest))
    this.fastest = recent[0]
  }

  private recentLatencies (now: number): Float64Array {
    const count = Math.min(this.written, WINDOW_SAMPLES)
    const recent = new Float64Array(count)
    let kept = 0
    for (let slot = 0; slot < count; slot++) {
      if (now - (this.takenAt[slot] as number) < WINDOW_MS) recent[kept++] = this.latencies[slot] as number
    }
    return recent.subarray(0, kept)
  }
}
