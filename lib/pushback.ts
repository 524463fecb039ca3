/**
 * Upstream pushback (SPEC §2, "The deadline protocol"): an upstream that answers 429 or 503 with `Retry-After`
 * asks its callers to send less. Hedges are the extra load a caller can drop without losing a request, so the
 * service sends none until that time (gRPC's `grpc-retry-pushback-ms`); first attempts still go out.
 */

/** The statuses whose Retry-After is a request to back off (RFC 9110 §10.2.3). */
export const PUSHBACK_STATUSES: ReadonlySet<number> = new Set([429, 503])

const DELTA_SECONDS = /^[0-9]+$/
/** Every HTTP-date form (IMF-fixdate, RFC 850, asctime) names its month; Date.parse alone also reads '-1' or '1.5'. */
const NAMES_A_MONTH = /\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\b/

/**
 * How long an answer asks hedging to pause, in ms, at most `capMs`: Retry-After as delta-seconds or as an
 * HTTP-date (counted from `nowMs`, a wall-clock time). Undefined when the answer asks nothing: another status,
 * no or an unreadable Retry-After, or pushback turned off (`capMs` 0).
 */
export function pushbackMs (statusCode: number, retryAfter: string | undefined, nowMs: number, capMs: number): number | undefined {
  if (!PUSHBACK_STATUSES.has(statusCode) || retryAfter === undefined || capMs === 0) return undefined
  const value = retryAfter.trim()
  const askedMs = DELTA_SECONDS.test(value) ? Number(value) * 1000 : NAMES_A_MONTH.test(value) ? Date.parse(value) - nowMs : Number.NaN
  if (Number.isNaN(askedMs)) return undefined
  return Math.min(Math.max(askedMs, 0), capMs)
}

/** Until when hedging is paused, on the monotonic clock. Longer pushback extends the pause; shorter never cuts it. */
export class HedgePause {
  private until = Number.NEGATIVE_INFINITY

  pauseFor (ms: number, now: number): void {
    this.until = Math.max(this.until, now + ms)
  }

  /** Milliseconds left of the pause in force, 0 when hedges may go out. */
  remainingMs (now: number): number {
    return Math.max(this.until - now, 0)
  }
}
