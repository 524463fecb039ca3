/**
 * Values that more than one part of the project must agree on. Settings live in lib/config.ts; what is here is
 * fixed by Node, by the contract with clients and upstreams, or by SPEC §4's reference schedule.
 */

/** Node fires a timer longer than 2^31-1 ms at once, so no delay or budget may exceed it. */
export const LARGEST_TIMER_MS = 2_147_483_647

/** Read from the client (or generated), echoed in the answer, and sent with every upstream attempt. */
export const REQUEST_ID_HEADER = 'x-request-id'

/**
 * The deadline protocol (SPEC §2): every attempt tells the upstream its number and the whole milliseconds left until
 * the client's deadline; a client may send the latter too, to propagate its own deadline.
 */
export const ATTEMPT_HEADER = 'x-attempt'
export const TIMEOUT_HEADER = 'x-timeout-ms'

/**
 * SPEC §4's reference schedule for /api/smart: one attempt, then this many more after this delay. They are the
 * defaults of HEDGE_REQUESTS and HEDGE_DELAY_MS, and what the benchmark's bare implementation and limits follow.
 */
export const REFERENCE_HEDGE_REQUESTS = 2
export const REFERENCE_HEDGE_DELAY_MS = 300
