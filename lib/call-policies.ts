import type { CompletionRule, LaunchSchedule } from './call-engine.js'
import type { Config } from './config.js'

/** The four endpoints of the API, each a policy of the one call engine. */
export const ENDPOINTS = ['smart', 'first', 'all', 'within-timeout'] as const
export type Endpoint = typeof ENDPOINTS[number]

/** How an endpoint runs its call: when attempts start, and when the call has its answer. */
export interface CallPolicy {
  schedule: LaunchSchedule
  completion: CompletionRule
}

/**
 * smart: 1 attempt now, HEDGE_REQUESTS more after HEDGE_DELAY_MS (or at the first failure), done at the first success.
 * first: FANOUT_REQUESTS at once, done at the first success.
 * all and within-timeout: FANOUT_REQUESTS at once, done when every attempt has ended. They differ only in how their
 * routes answer a deadline: /api/all with 408, /api/within-timeout with the successes so far.
 */
export function callPolicies (config: Pick<Config, 'HEDGE_DELAY_MS' | 'HEDGE_REQUESTS' | 'FANOUT_REQUESTS'>): Record<Endpoint, CallPolicy> {
  const fanOut: LaunchSchedule = { initial: config.FANOUT_REQUESTS }
  return {
    smart: { schedule: { initial: 1, hedge: { attempts: config.HEDGE_REQUESTS, afterMs: config.HEDGE_DELAY_MS } }, completion: 'first-success' },
    first: { schedule: fanOut, completion: 'first-success' },
    all: { schedule: fanOut, completion: 'every-attempt' },
    'within-timeout': { schedule: fanOut, completion: 'every-attempt' }
  }
}
