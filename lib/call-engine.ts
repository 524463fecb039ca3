/**
 * The call engine: one call to the upstream as a launch schedule plus a completion rule, with one absolute
 * deadline, free of any transport. An attempt is just a function that gets `{ signal, attempt, deadline }` and
 * reports success or failure; the upstream-call plugin plugs the got-based client into it, and each endpoint is
 * a policy (lib/call-policies.ts).
 *
 *   t=0               `initial` attempts start
 *   t=hedge.afterMs   if nothing has succeeded yet, `hedge.attempts` more start together (at once instead, as
 *                     soon as an attempt fails: waiting would only add latency)
 *   completion        'first-success': the first success; 'every-attempt': once every attempt has ended
 *   deadline          every attempt still running is aborted; the call ends with what has succeeded so far
 *   client gone       every attempt still running is aborted
 *
 * Attempts still running when the call ends are aborted right after the caller has its result (see `teardown`).
 */

/** What one attempt reports. Attempts do not throw: a failure is a value with a reason. */
export type AttemptOutcome<T, Reason extends string = string> =
  | { ok: true, value: T }
  | { ok: false, reason: Reason, detail: string }

/** What an attempt gets: its abort signal, its number (1-based), and the call's deadline (on the call's clock). */
export interface AttemptContext {
  signal: AbortSignal
  attempt: number
  deadline: number
}

/** Starts one attempt; it must stop its work when `signal` aborts. */
export type StartAttempt<T, Reason extends string = string> = (context: AttemptContext) => Promise<AttemptOutcome<T, Reason>>

/**
 * How an attempt ended: 'success', the failure reason it reported, 'error' if it broke its contract and
 * threw, or 'aborted' if it was still running when the call ended.
 */
export type AttemptResult<Reason extends string> = Reason | 'success' | 'error' | 'aborted'

/** Why the call aborted the attempts still running; it is the AbortSignal's `reason`. */
export type AbortCause = 'lost' | 'deadline' | 'cancelled'

/** How one attempt went, once the call has ended. */
export interface AttemptRecord<Reason extends string = string> {
  attempt: number
  /** Milliseconds after the call began. */
  startedAt: number
  /** Milliseconds after the call began: when it reported, or when the end of the call aborted it. */
  endedAt: number
  result: AttemptResult<Reason>
  /** Why a failed attempt failed, in words. */
  detail?: string
}

/** When a call's attempts start. */
export interface LaunchSchedule {
  /** Attempts started at once. */
  initial: number
  /** Attempts started together once `afterMs` has passed, or as soon as an attempt fails, if none succeeded. */
  hedge?: { attempts: number, afterMs: number }
}

/** When a call has its answer: at the first success, or once every attempt has ended. */
export type CompletionRule = 'first-success' | 'every-attempt'

export interface CallResult<T, Reason extends string = string> {
  /**
   * complete: the completion rule was met, or every attempt ended (all of them failed, for 'first-success');
   * deadline: the deadline came first; cancelled: the caller left.
   */
  ending: 'complete' | 'deadline' | 'cancelled'
  /** The successes, in the order they arrived: one at most under 'first-success'. */
  successes: Array<{ attempt: number, value: T }>
  /** Every attempt, by number. */
  attempts: AttemptRecord<Reason>[]
  /** The failed attempts' details, in the order they failed. */
  failures: string[]
}

/** The engine's only sources of time, so that its tests can run on a fake clock. */
export interface Clock {
  now: () => number
  setTimeout: (callback: () => void, ms: number) => unknown
  clearTimeout: (timer: unknown) => void
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout)
}

export interface CallOptions<T, Reason extends string = string> {
  schedule: LaunchSchedule
  completion: CompletionRule
  startAttempt: StartAttempt<T, Reason>
  /** When the call gives up and aborts everything, on `clock` (performance.now() by default). */
  deadline: number
  /** Aborts the whole call, e.g. when the client that asked for it has gone away. */
  cancelSignal?: AbortSignal
  /**
   * Asked when the hedge is due, with the time left until the deadline; false holds it back (e.g. under overload,
   * a hedge budget run low, upstream pushback, or too little time left for a hedge to finish).
   */
  mayHedge?: (timeLeftMs: number) => boolean
  clock?: Clock
}

/**
 * Attempts of ended calls, waiting to be aborted, oldest first, shared by every call: answers go out before
 * teardown. Aborting an attempt (closing its connection) costs more than answering, and under load the
 * deadlines of many calls fall due together; a call whose deadline is due must not wait for the teardown of
 * every call that ended before it. So the queue is worked off in slices of TEARDOWN_SLICE_MS, each in the check
 * phase of one turn of the event loop; timers and I/O that fell due run between two slices. A lone call's
 * attempts are all aborted in the first slice, before any timer or I/O callback after its end.
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

/** Runs a call and resolves with how it ended. Never rejects. */
export function runCall<T, Reason extends string = string> (options: CallOptions<T, Reason>): Promise<CallResult<T, Reason>> {
  return new Promise((resolve) => {
    const { schedule, completion, startAttempt, deadline, cancelSignal, mayHedge, clock = realClock } = options
    const startTime = clock.now()
    const elapsed = (): number => clock.now() - startTime
    const result: CallResult<T, Reason> = { ending: 'complete', successes: [], attempts: [], failures: [] }
    /** Attempts still working, by number: when each started and the controller that stops it. */
    const running = new Map<number, { startedAt: number, controller: AbortController }>()
    let maxAttempts = schedule.initial + (schedule.hedge?.attempts ?? 0)
    let launched = 0
    let ended = false
    let hedgeTimer: unknown

    const end = (ending: CallResult<T, Reason>['ending'], abortCause: AbortCause): void => {
      ended = true
      clock.clearTimeout(hedgeTimer)
      clock.clearTimeout(deadlineTimer)
      cancelSignal?.removeEventListener('abort', onCancel)
      const now = elapsed()
      for (const [attempt, { startedAt }] of running) result.attempts.push({ attempt, startedAt, endedAt: now, result: 'aborted' })
      result.attempts.sort((a, b) => a.attempt - b.attempt)
      result.ending = ending
      resolve(result)
      // The answer goes out first: the caller's continuation (a 408 or 200 written to its socket) runs in the
      // microtasks right after this; the attempts still running are torn down after it. Aborting them before
      // answering made every answer wait for the teardown of all the calls that ended before it.
      for (const { controller } of running.values()) scheduleTeardown(controller, abortCause)
      running.clear()
    }

    const onOutcome = (attempt: number, outcome: AttemptOutcome<T, Reason | 'error'>): void => {
      const startedAt = running.get(attempt)?.startedAt
      // Not running any more means the call has ended: a late outcome changes nothing.
      if (startedAt === undefined) return
      running.delete(attempt)
      if (outcome.ok) {
        result.attempts.push({ attempt, startedAt, endedAt: elapsed(), result: 'success' })
        result.successes.push({ attempt, value: outcome.value })
        if (completion === 'first-success') {
          end('complete', 'lost')
          return
        }
      } else {
        result.attempts.push({ attempt, startedAt, endedAt: elapsed(), result: outcome.reason, detail: outcome.detail })
        result.failures.push(outcome.detail)
        if (launched < maxAttempts) fireHedges()
        if (ended) return
      }
      if (running.size === 0 && launched === maxAttempts) {
        // An attempt's own timer may expire together with the deadline: that is still a deadline.
        end(clock.now() >= deadline ? 'deadline' : 'complete', 'lost')
      }
    }

    const launch = (): void => {
      const attempt = ++launched
      const controller = new AbortController()
      running.set(attempt, { startedAt: elapsed(), controller })
      let outcome: Promise<AttemptOutcome<T, Reason>>
      try {
        outcome = startAttempt({ signal: controller.signal, attempt, deadline })
      } catch (error) {
        outcome = Promise.reject(error)
      }
      outcome.then(
        (reported) => onOutcome(attempt, reported),
        (error: unknown) => onOutcome(attempt, { ok: false, reason: 'error', detail: String(error) })
      )
    }

    const fireHedges = (): void => {
      clock.clearTimeout(hedgeTimer)
      // Node runs due timers list by list (one list per duration), not one by one: when the event loop is
      // late, the hedge timer can run before an earlier deadline timer. A hedge at or past the deadline
      // would only open connections to be reset at once.
      if (clock.now() >= deadline) {
        end('deadline', 'deadline')
        return
      }
      // No hedge once an attempt has succeeded (under 'every-attempt' the call goes on after a success). A refused
      // hedge is not asked again: this call stays with the attempts it has.
      if (result.successes.length > 0 || mayHedge?.(deadline - clock.now()) === false) maxAttempts = launched
      for (let attempt = launched + 1; attempt <= maxAttempts; attempt++) launch()
      // With the hedges refused, the attempts that already failed may have been the last ones.
      if (running.size === 0) end('complete', 'lost')
    }

    const onCancel = (): void => end('cancelled', 'cancelled')

    const onDeadline = (): void => {
      // Node counts a timer from the event loop's clock, read when the loop's turn began: a call started late in a
      // busy turn (a burst of requests) gets a timer that fires that much early. The rest is waited for.
      const early = deadline - clock.now()
      if (early > 0) deadlineTimer = clock.setTimeout(onDeadline, early)
      else end('deadline', 'deadline')
    }
    let deadlineTimer = clock.setTimeout(onDeadline, deadline - startTime)
    if (cancelSignal?.aborted === true) {
      onCancel()
      return
    }
    if (deadline <= startTime) {
      // The time was spent before the call began (e.g. the request waited in a busy event loop).
      end('deadline', 'deadline')
      return
    }
    cancelSignal?.addEventListener('abort', onCancel, { once: true })
    for (let i = 0; i < schedule.initial; i++) launch()
    // Outcomes arrive asynchronously, so nothing has ended yet here. A hedge due at or after the deadline (a timeout
    // no longer than the hedge delay) is never scheduled: it would only open connections to be reset at once, and
    // its timer, counted from a lagging loop clock like the deadline's, could fire before the deadline has passed.
    const { hedge } = schedule
    if (hedge !== undefined && hedge.attempts > 0 && startTime + hedge.afterMs < deadline) hedgeTimer = clock.setTimeout(fireHedges, hedge.afterMs)
  })
}
