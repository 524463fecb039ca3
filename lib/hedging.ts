/**
 * Hedged calls with a hard deadline, free of any transport: an attempt is just a function that gets an
 * AbortSignal and reports success or failure. The HTTP route and the got-based upstream client plug into it.
 *
 * Schedule (the reference design's, with its defaults):
 *
 *   t=0            attempt 1 starts
 *   t=hedgeDelay   if nothing succeeded yet, `hedgeRequests` more attempts start together
 *                  (at once instead, if attempt 1 has already failed: waiting would only add latency)
 *   first success  wins; every attempt still running is aborted (each attempt has its own signal)
 *   deadline       every attempt is aborted, the call reports `deadline`
 */

/** What one attempt reports. Attempts do not throw: a failure is a value with a reason. */
export type AttemptOutcome<T, Reason extends string = string> =
  | { ok: true, value: T }
  | { ok: false, reason: Reason, detail: string }

/** Starts attempt number `attempt` (1-based); it must stop its work when `signal` aborts. */
export type StartAttempt<T, Reason extends string = string> =
  (signal: AbortSignal, attempt: number) => Promise<AttemptOutcome<T, Reason>>

/**
 * How an attempt ended: 'success', the failure reason it reported, 'error' if it broke its contract and
 * threw, or 'aborted' if it was still running when the call was decided.
 */
export type AttemptResult<Reason extends string> = Reason | 'success' | 'error' | 'aborted'

/** Why the call aborted the attempts still running; it is the AbortSignal's `reason`. */
export type AbortCause = 'lost' | 'deadline' | 'cancelled'

/** How one attempt went, once the call is decided. */
export interface AttemptRecord<Reason extends string = string> {
  attempt: number
  /** Milliseconds after the call began. */
  startedAt: number
  /** Milliseconds after the call began: when it reported, or when the decision aborted it. */
  endedAt: number
  result: AttemptResult<Reason>
  /** Why a failed attempt failed, in words. */
  detail?: string
}

export type HedgeResult<T, Reason extends string = string> =
  | { kind: 'success', value: T, winner: number, attempts: AttemptRecord<Reason>[] }
  | { kind: 'deadline', attempts: AttemptRecord<Reason>[] }
  | { kind: 'all_failed', attempts: AttemptRecord<Reason>[], failures: string[] }
  | { kind: 'cancelled', attempts: AttemptRecord<Reason>[] }

export interface HedgeOptions<T, Reason extends string = string> {
  startAttempt: StartAttempt<T, Reason>
  /** Wait before hedging when attempt 1 neither succeeded nor failed. */
  hedgeDelayMs: number
  /** Attempts added by the hedge; 0 disables hedging. */
  hedgeRequests: number
  /** Milliseconds from now until the call gives up and aborts everything. */
  budgetMs: number
  /** Aborts the whole call, e.g. when the client that asked for it has gone away. */
  cancelSignal?: AbortSignal
  /** Asked when the hedge is due; false holds the hedges back (e.g. under overload, or a hedge budget run low). */
  mayHedge?: () => boolean
}

/**
 * Attempts of decided calls, waiting to be aborted, oldest first, shared by every call: answers go out before
 * teardown. Aborting an attempt (closing its connection) costs more than answering, and under load the
 * deadlines of many calls fall due together; a call whose deadline is due must not wait for the teardown of
 * every call decided before it. So the queue is worked off in slices of TEARDOWN_SLICE_MS, each in the check
 * phase of one turn of the event loop; timers and I/O that fell due run between two slices. A lone call's
 * losers are all aborted in the first slice, before any timer or I/O callback after the decision.
 */
const teardown: Array<{ controller: AbortController, cause: AbortCause }> = []
let teardownNext = 0
const TEARDOWN_SLICE_MS = 2

function scheduleTeardown (controller: AbortController, cause: AbortCause): void {
  if (teardown.push({ controller, cause }) - teardownNext === 1) setImmediate(tearDownSlice)
}

function tearDownSlice (): void {
  const until = performance.now() + TEARDOWN_SLICE_MS
  do {
    const next = teardown[teardownNext++]
    next?.controller.abort(next.cause)
  } while (teardownNext < teardown.length && performance.now() < until)
  if (teardownNext < teardown.length) {
    // Under a long overload the queue may never run empty: drop what is done, so it holds no garbage.
    teardown.splice(0, teardownNext)
    teardownNext = 0
    setImmediate(tearDownSlice)
  } else {
    teardown.length = 0
    teardownNext = 0
  }
}

/**
 * Runs attempts on the hedging schedule and resolves with the first success, or with why there is none.
 * Never rejects. Every attempt still running when it resolves is told to abort right after the caller has
 * had its result: after the answer went out (see `teardown`).
 */
export function hedgedCall<T, Reason extends string = string> (
  options: HedgeOptions<T, Reason>
): Promise<HedgeResult<T, Reason>> {
  return new Promise((resolve) => {
    const { startAttempt, hedgeDelayMs, hedgeRequests, budgetMs, cancelSignal, mayHedge } = options
    let maxAttempts = 1 + hedgeRequests
    const startTime = performance.now()
    const elapsed = (): number => performance.now() - startTime
    /** Attempts that have ended; completed with the aborted ones when the call is decided. */
    const attempts: AttemptRecord<Reason>[] = []
    /** Attempts still working, by number: when each started and the controller that stops it. */
    const running = new Map<number, { startedAt: number, controller: AbortController }>()
    const failures: string[] = []
    let launched = 0
    let decided = false
    let hedgeTimer: NodeJS.Timeout | undefined

    const decide = (result: HedgeResult<T, Reason>, abortCause: AbortCause): void => {
      decided = true
      clearTimeout(hedgeTimer)
      clearTimeout(deadlineTimer)
      cancelSignal?.removeEventListener('abort', onCancel)
      const now = elapsed()
      for (const [attempt, { startedAt }] of running) attempts.push({ attempt, startedAt, endedAt: now, result: 'aborted' })
      attempts.sort((a, b) => a.attempt - b.attempt)
      resolve(result)
      // The answer goes out first: the caller's continuation (a 408 or 200 written to its socket) runs in
      // the microtasks right after this; the attempts still running are torn down after it. Aborting them
      // before answering made every answer wait for the teardown of all the calls decided before it.
      // Finished attempts are left alone.
      for (const { controller } of running.values()) scheduleTeardown(controller, abortCause)
      running.clear()
    }

    const onOutcome = (attempt: number, outcome: AttemptOutcome<T, Reason | 'error'>): void => {
      const startedAt = running.get(attempt)?.startedAt
      // Not running any more means the call is decided: a late outcome changes nothing.
      if (startedAt === undefined) return
      running.delete(attempt)
      if (outcome.ok) {
        attempts.push({ attempt, startedAt, endedAt: elapsed(), result: 'success' })
        decide({ kind: 'success', value: outcome.value, winner: attempt, attempts }, 'lost')
        return
      }
      attempts.push({ attempt, startedAt, endedAt: elapsed(), result: outcome.reason, detail: outcome.detail })
      failures.push(outcome.detail)
      if (launched < maxAttempts) fireHedges()
      if (decided) return
      if (running.size === 0) {
        // An attempt's own timer may expire together with the deadline: that is still a deadline.
        if (elapsed() >= budgetMs) decide({ kind: 'deadline', attempts }, 'deadline')
        else decide({ kind: 'all_failed', attempts, failures }, 'lost')
      }
    }

    const launch = (): void => {
      const attempt = ++launched
      const controller = new AbortController()
      running.set(attempt, { startedAt: elapsed(), controller })
      let outcome: Promise<AttemptOutcome<T, Reason>>
      try {
        outcome = startAttempt(controller.signal, attempt)
      } catch (error) {
        outcome = Promise.reject(error)
      }
      outcome.then(
        (reported) => onOutcome(attempt, reported),
        (error: unknown) => onOutcome(attempt, { ok: false, reason: 'error', detail: String(error) })
      )
    }

    const fireHedges = (): void => {
      clearTimeout(hedgeTimer)
      // Node runs due timers list by list (one list per duration), not one by one: when the event loop is
      // late, the hedge timer can run before an earlier deadline timer. A hedge at or past the deadline
      // would only open connections to be reset at once.
      if (elapsed() >= budgetMs) {
        decide({ kind: 'deadline', attempts }, 'deadline')
        return
      }
      // A refused hedge is not asked again: this call stays with the attempts it has.
      if (mayHedge?.() === false) maxAttempts = launched
      for (let attempt = launched + 1; attempt <= maxAttempts; attempt++) launch()
    }

    const onCancel = (): void => decide({ kind: 'cancelled', attempts }, 'cancelled')

    const deadlineTimer = setTimeout(() => decide({ kind: 'deadline', attempts }, 'deadline'), budgetMs)
    if (cancelSignal?.aborted === true) {
      onCancel()
      return
    }
    if (budgetMs <= 0) {
      // The budget was spent before the call began (e.g. the request waited in a busy event loop).
      decide({ kind: 'deadline', attempts }, 'deadline')
      return
    }
    cancelSignal?.addEventListener('abort', onCancel, { once: true })
    launch()
    // Outcomes arrive asynchronously, so nothing is decided yet here.
    if (maxAttempts > 1) hedgeTimer = setTimeout(fireHedges, hedgeDelayMs)
  })
}
