import fp from 'fastify-plugin'
import { Gauge } from 'prom-client'
import type { AttemptRecord } from '../lib/call-engine.js'
import { AdaptiveHedgeDelay } from '../lib/adaptive-hedge-delay.js'
import { HedgeBudget } from '../lib/hedge-budget.js'
import { HedgePause, pushbackMs } from '../lib/pushback.js'

/** Why a due hedge was held back: the label of smart_hedges_throttled_total. */
export type HoldBackReason = 'pushback' | 'overload' | 'budget' | 'hopeless'

export interface HedgeAdmission {
  /** When a call's hedges are due: HEDGE_DELAY_MS, or with HEDGE_POLICY=adaptive the delay in force. */
  hedgeDelayMs: () => number
  /** Asked when a call's hedge is due: false holds it back, and counts why in smart_hedges_throttled_total. */
  mayHedge: (timeLeftMs: number) => boolean
  /** Learns from a call's attempts: the hedge budget (when on), and the adaptive delay from hedged calls' first attempts. */
  recordAttempts: (attempts: readonly AttemptRecord[], hedged: boolean) => void
  /** An attempt was answered 429 or 503 with this Retry-After: no hedges until then (at most MAX_PUSHBACK_MS). */
  recordPushback: (statusCode: number, retryAfter: string) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    hedgeAdmission: HedgeAdmission
  }
}

/**
 * Decorates `fastify.hedgeAdmission`, the one place that decides when hedges are due and whether a due one may go
 * out:
 * - MAX_PUSHBACK_MS (0: off): not while an upstream's Retry-After asks callers to back off;
 * - OVERLOAD_HOLD_HEDGES: not while the service sheds load, since extra attempts would deepen the overload;
 * - HEDGE_BUDGET_TOKENS (0: off): not while the hedge budget is low, i.e. while the upstream is failing;
 * - HEDGE_POLICY=adaptive: not when less time is left than the fastest recent success took (it could not finish).
 */
export default fp(async (fastify) => {
  const { HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO, OVERLOAD_HOLD_HEDGES, HEDGE_POLICY, HEDGE_QUANTILE, HEDGE_DELAY_MS, MAX_PUSHBACK_MS } = fastify.config
  const budget = HEDGE_BUDGET_TOKENS === 0 ? null : new HedgeBudget(HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO)
  const adaptive = HEDGE_POLICY === 'adaptive' ? new AdaptiveHedgeDelay({ quantile: HEDGE_QUANTILE, fallbackMs: HEDGE_DELAY_MS }) : null
  const pause = new HedgePause()
  const { hedgesThrottled, registry } = fastify.metrics
  const hedgeDelayMs = adaptive === null ? () => HEDGE_DELAY_MS : () => adaptive.delayMs()

  // Read when metrics are scraped.
  new Gauge({ // eslint-disable-line no-new
    name: 'smart_hedge_delay_seconds',
    help: 'The hedge delay of /api/smart in force: HEDGE_DELAY_MS, or with HEDGE_POLICY=adaptive the quantile of recent first attempts.',
    registers: [registry],
    collect () { this.set(hedgeDelayMs() / 1000) }
  })
  new Gauge({ // eslint-disable-line no-new
    name: 'smart_hedge_pause_seconds',
    help: "What is left of the pause in hedging an upstream's Retry-After (on 429 or 503) imposed; 0 when hedges may go out.",
    registers: [registry],
    collect () { this.set(pause.remainingMs(performance.now()) / 1000) }
  })

  const holdBackReason = (timeLeftMs: number): HoldBackReason | null => {
    if (pause.remainingMs(performance.now()) > 0) return 'pushback'
    if (OVERLOAD_HOLD_HEDGES && fastify.isUnderPressure()) return 'overload'
    if (budget !== null && !budget.allowsHedge()) return 'budget'
    if (timeLeftMs < (adaptive?.fastestMs() ?? 0)) return 'hopeless'
    return null
  }

  fastify.decorate('hedgeAdmission', {
    hedgeDelayMs,
    mayHedge: (timeLeftMs) => {
      const reason = holdBackReason(timeLeftMs)
      if (reason === null) return true
      hedgesThrottled.inc({ reason })
      return false
    },
    // Every attempt that reached a verdict counts for the budget; aborted ones say nothing about the upstream's
    // health. The adaptive delay learns from first attempts only: they are what the delay is compared with.
    recordAttempts: (attempts, hedged) => {
      const first = attempts[0]
      if (adaptive !== null && hedged && first?.result === 'success') adaptive.recordSuccess(first.endedAt - first.startedAt)
      if (budget === null) return
      for (const { result } of attempts) {
        if (result === 'success') budget.recordSuccess()
        else if (result !== 'aborted') budget.recordFailure()
      }
    },
    recordPushback: (statusCode, retryAfter) => {
      const ms = pushbackMs(statusCode, retryAfter, Date.now(), MAX_PUSHBACK_MS)
      if (ms === undefined) return
      const now = performance.now()
      if (pause.remainingMs(now) === 0 && ms > 0) fastify.log.info({ statusCode, retryAfter, pauseMs: ms }, 'upstream pushback: hedges paused')
      pause.pauseFor(ms, now)
    }
  } satisfies HedgeAdmission)
}, { name: 'hedge-admission', dependencies: ['config', 'metrics', 'load-shedding'] })
