import fp from 'fastify-plugin'
import { HedgeBudget } from '../lib/hedge-budget.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Shared by every request of this instance; null when HEDGE_BUDGET_TOKENS is 0 (the default). */
    hedgeBudget: HedgeBudget | null
  }
}

/** Decorates `fastify.hedgeBudget` from HEDGE_BUDGET_TOKENS and HEDGE_BUDGET_TOKEN_RATIO. */
export default fp(async (fastify) => {
  const { HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO } = fastify.config
  fastify.decorate('hedgeBudget', HEDGE_BUDGET_TOKENS === 0 ? null : new HedgeBudget(HEDGE_BUDGET_TOKENS, HEDGE_BUDGET_TOKEN_RATIO))
}, { name: 'hedge-budget', dependencies: ['config'] })
