import fp from 'fastify-plugin'
import type { AttemptRecord } from '../lib/call-engine.js'
import { HedgeBudget } from '../lib/hedge-budget.js'

export interface HedgeAdmission {
  /** Asked when a call's hedge is due: false holds it back, and counts why in smart_hedges_throttled_total. */
  mayHedge: () => boolean
  /** Tells the hedge budget (when on) how a call's attempts went. */
  recordAttempts: (attempts: readonly AttemptRecord[]) => void
}

declare module 'fastify' {
  interface FastifyInstance {
    hedgeAdmission: HedgeAdmission
  }
}

/**
 * Decorates `fastify.hedgeAdmission`, the one place that decides whether a due hedge may go out:
 * - OVERLOAD_HOLD_HEDGES: not while the service sheds load, since extra attempts would deepen the overload;
 * - HEDGE_BUDGET_TOKENS (0: off): not while the hedge budget is low, i.e. while the upstream is failing.
 */
export default fp(async (fastify) => {
  const { HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO, OVERLOAD_HOLD_HEDGES } = fastify.config
  const budget = HEDGE_BUDGET_TOKENS === 0 ? null : new HedgeBudget(HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO)
  const { hedgesThrottled } = fastify.metrics

  const holdBackReason = (): 'overload' | 'budget' | null => {
    if (OVERLOAD_HOLD_HEDGES && fastify.isUnderPressure()) return 'overload'
    if (budget !== null && !budget.allowsHedge()) return 'budget'
    return null
  }

  fastify.decorate('hedgeAdmission', {
    mayHedge: () => {
      const reason = holdBackReason()
      if (reason === null) return true
      hedgesThrottled.inc({ reason })
      return false
    },
    // Every attempt that reached a verdict counts; aborted ones say nothing about the upstream's health.
    recordAttempts: (attempts) => {
      if (budget === null) return
      for (const { result } of attempts) {
        if (result === 'success') budget.recordSuccess()
        else if (result !== 'aborted') budget.recordFailure()
      }
    }
  } satisfies HedgeAdmission)
}, { name: 'hedge-admission', dependencies: ['config', 'metrics', 'load-shedding'] })
