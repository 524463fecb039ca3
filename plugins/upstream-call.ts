import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { runCall, type CallResult, type LaunchSchedule } from '../lib/call-engine.js'
import { callPolicies, type CallPolicy, type Endpoint } from '../lib/call-policies.js'
import type { AttemptFailure, UpstreamAttempt } from '../lib/upstream-client.js'

/** A client's deadline: its timeout, and when it falls due (performance.now()), counted from the request's arrival. */
export interface ClientDeadline {
  timeoutMs: number
  at: number
}

export type UpstreamCallResult = CallResult<string, AttemptFailure>

/** The call a request made, for the telemetry plugin: its deadline, and its result once it has ended. */
export interface UpstreamCallRecord {
  deadline: ClientDeadline
  result: UpstreamCallResult | undefined
  ended: Promise<UpstreamCallResult>
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Each endpoint's policy, from the configuration. */
    callPolicies: Record<Endpoint, CallPolicy>
    /** Runs `policy` against the upstream for `request`, until its deadline or until its client leaves. */
    callUpstream: (request: FastifyRequest, policy: CallPolicy, deadline: ClientDeadline) => Promise<UpstreamCallResult>
  }
  interface FastifyRequest {
    upstreamCall: UpstreamCallRecord | null
  }
}

/** How long after the deadline an attempt's own time limit ends, if the deadline somehow did not stop it. */
const ATTEMPT_TIMEOUT_BACKSTOP_MS = 1000

/**
 * Decorates `fastify.callUpstream`: the call engine with the upstream client's attempts, the request's abort
 * signal (its client hanging up) and hedge admission plugged in.
 */
export default fp(async (fastify) => {
  const { upstream, hedgeAdmission } = fastify
  fastify.decorate('callPolicies', callPolicies(fastify.config))
  fastify.decorateRequest('upstreamCall', null)

  /** An upstream that pushes back (429/503 with Retry-After) pauses hedging before the engine hears of the failure. */
  const noticePushback = (outcome: UpstreamAttempt): UpstreamAttempt => {
    if (outcome.pushback !== undefined) hedgeAdmission.recordPushback(outcome.pushback.statusCode, outcome.pushback.retryAfter)
    return outcome
  }

  /**
   * The policy's schedule with the hedge delay in force when a call begins (HEDGE_POLICY=adaptive moves it). The
   * policy's own object while the delay is the configured one, as it always is with `fixed`: no copy per call.
   */
  const scheduleInForce = ({ schedule }: CallPolicy): LaunchSchedule => {
    const { hedge } = schedule
    if (hedge === undefined) return schedule
    const afterMs = hedgeAdmission.hedgeDelayMs()
    return afterMs === hedge.afterMs ? schedule : { ...schedule, hedge: { ...hedge, afterMs } }
  }

  fastify.decorate('callUpstream', (request: FastifyRequest, policy: CallPolicy, deadline: ClientDeadline) => {
    const hedges = policy.schedule.hedge !== undefined
    const ended = runCall<string, AttemptFailure>({
      completion: policy.completion,
      schedule: scheduleInForce(policy),
      deadline: deadline.at,
      cancelSignal: request.signal,
      mayHedge: hedgeAdmission.mayHedge,
      // The call's deadline timer aborts every attempt; each attempt's own time limit (got's timer) ends a
      // little later, as a backstop only. Ending together, both would fire under load, and got's would build a
      // TimeoutError per attempt that nobody needs.
      startAttempt: ({ signal, attempt, deadline: at }) => new Promise<UpstreamAttempt>((resolve) => {
        // Connections are opened in the check phase, once every request that arrived in this turn of the event
        // loop has been read and has its deadline timer: in a burst, the last request must not wait for all the
        // connections opened for the ones before it (its deadline counts from its arrival).
        setImmediate(() => resolve(upstream.attempt(signal, at + ATTEMPT_TIMEOUT_BACKSTOP_MS - performance.now(), { requestId: request.id, attempt, deadline: at })
          .then(noticePushback)))
      })
    }).then((result) => {
      record.result = result
      hedgeAdmission.recordAttempts(result.attempts, hedges)
      return result
    })
    const record: UpstreamCallRecord = { deadline, result: undefined, ended }
    request.upstreamCall = record
    return ended
  })
}, { name: 'upstream-call', dependencies: ['config', 'upstream-client', 'hedge-admission'] })
