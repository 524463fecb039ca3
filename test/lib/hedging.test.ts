import t from 'tap'
import { getEventListeners } from 'node:events'
import { hedgedCall, type AttemptOutcome, type HedgeOptions } from '../../lib/hedging.js'

type Outcome = AttemptOutcome<string>

/** An attempt the test finishes by hand, recording when it started and whether it was aborted. */
interface ControlledAttempt {
  number: number
  startedAt: number
  signal: AbortSignal
  succeed (value: string): void
  fail (reason: string): void
}

function controlledAttempts () {
  const started: ControlledAttempt[] = []
  const origin = performance.now()
  const startAttempt = (signal: AbortSignal, number: number): Promise<Outcome> =>
    new Promise((resolve) => {
      started.push({
        number,
        startedAt: performance.now() - origin,
        signal,
        succeed: (value) => resolve({ ok: true, value }),
        fail: (reason) => resolve({ ok: false, reason, detail: `attempt ${number}: ${reason}` })
      })
    })
  return { started, startAttempt }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolves once the attempts still running at the decision have been aborted (the check phase after it). */
const teardown = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

const base = { hedgeDelayMs: 40, hedgeRequests: 2, budgetMs: 1000 }

function run (options: Partial<HedgeOptions<string>> & Pick<HedgeOptions<string>, 'startAttempt'>) {
  return hedgedCall<string>({ ...base, ...options })
}

t.test('a quick first attempt wins alone: no hedge is fired', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt })
  started[0]?.succeed('first')
  const result = await call
  t.equal(result.kind, 'success')
  t.match(result, { value: 'first', winner: 1 })
  await sleep(base.hedgeDelayMs + 20)
  t.equal(started.length, 1, 'the hedge timer was cleared')
  t.match(result.attempts, [{ attempt: 1, result: 'success' }])
})

t.test('after the hedge delay, the hedges start together and the first success wins', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt })
  await sleep(base.hedgeDelayMs - 20)
  t.equal(started.length, 1, 'only attempt 1 before the delay')
  await sleep(40)
  t.equal(started.length, 3, 'two hedges after the delay')
  t.ok(Math.abs((started[1]?.startedAt ?? 0) - (started[2]?.startedAt ?? 1)) < 2, 'hedges start together')
  t.ok((started[1]?.startedAt ?? 0) >= base.hedgeDelayMs - 1, 'not before the delay')
  started[2]?.succeed('third')
  const result = await call
  t.match(result, { kind: 'success', value: 'third', winner: 3 })
  t.equal(started[0]?.signal.aborted, false, 'the answer comes first: the losers are still running when it is known')
  await teardown()
  t.equal(started[0]?.signal.aborted, true, 'loser 1 aborted')
  t.equal(started[2]?.signal.aborted, false, 'the winner is left alone: its work is done')
  t.equal(started[1]?.signal.reason, 'lost', 'losers are told they lost')
  t.match(result.attempts, [
    { attempt: 1, result: 'aborted' }, { attempt: 2, result: 'aborted' }, { attempt: 3, result: 'success' }
  ])
})

t.test('when attempt 1 fails before the hedge delay, the hedges start at once', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeDelayMs: 500 })
  started[0]?.fail('http_error')
  await sleep(5)
  t.equal(started.length, 3, 'hedges did not wait for the timer')
  t.ok((started[1]?.startedAt ?? 500) < 50)
  started[1]?.fail('timeout')
  started[2]?.succeed('late winner')
  const result = await call
  t.match(result, { kind: 'success', winner: 3 })
  t.match(result.attempts, [{ result: 'http_error' }, { result: 'timeout' }, { result: 'success' }])
})

t.test('never more than 1 + hedgeRequests attempts, and all failing gives all_failed', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeDelayMs: 0 })
  await sleep(5)
  for (const attempt of started) attempt.fail('http_error')
  const result = await call
  t.match(result, { kind: 'all_failed', failures: ['attempt 1: http_error', 'attempt 2: http_error', 'attempt 3: http_error'] })
  t.equal(started.length, 3)
  t.match(result.attempts.map((a) => a.detail), ['attempt 1: http_error', 'attempt 2: http_error', 'attempt 3: http_error'])
})

t.test('with hedgeRequests 0 there is one attempt and no hedge timer', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeRequests: 0, hedgeDelayMs: 0 })
  await sleep(10)
  t.equal(started.length, 1)
  started[0]?.fail('invalid_json')
  t.match(await call, { kind: 'all_failed', attempts: [{ result: 'invalid_json' }] })
})

t.test('the deadline aborts every running attempt at once', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const begin = performance.now()
  const result = await run({ startAttempt, hedgeDelayMs: 20, budgetMs: 80 })
  const took = performance.now() - begin
  t.equal(result.kind, 'deadline')
  t.ok(took >= 79 && took < 80 + 30, `decided at the deadline (${took.toFixed(1)} ms)`)
  t.equal(started.length, 3)
  await teardown()
  for (const attempt of started) t.equal(attempt.signal.reason, 'deadline')
  t.match(result.attempts, [{ result: 'aborted' }, { result: 'aborted' }, { result: 'aborted' }])
  started[0]?.succeed('too late')
  await sleep(5)
  // The records are the call's own array: a late outcome must not be written into it.
  t.equal(result.attempts.length, 3)
  t.ok(result.attempts.every((attempt) => attempt.result === 'aborted'), 'a success after the decision changes nothing')
})

t.test('the losers are aborted before any timer or I/O callback that follows the decision', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeDelayMs: 0 })
  await sleep(5)
  started[1]?.succeed('second')
  await call
  const seenByNextTimer = await new Promise<boolean[]>((resolve) => {
    setTimeout(() => resolve(started.map((attempt) => attempt.signal.aborted)), 0)
  })
  t.same(seenByNextTimer, [true, false, true], 'aborted by the time the next timer runs; the winner left alone')
})

t.test('an attempt that fails only after the deadline changes nothing: the deadline decided', async (t) => {
  let calls = 0
  const result = await hedgedCall<string>({
    hedgeDelayMs: 0,
    hedgeRequests: 0,
    budgetMs: 30,
    // It reports at 40 ms; the deadline timer (30 ms) is earlier, so the call must already be decided.
    // (A failure and the deadline falling due together is the next test.)
    startAttempt: () => { calls++; return sleep(40).then(() => ({ ok: false, reason: 'timeout', detail: 'attempt timed out' })) }
  })
  t.equal(result.kind, 'deadline')
  t.equal(calls, 1)
})

t.test('a failure reported after the budget is classed as deadline even if the timer has not fired', async (t) => {
  // Block the event loop past the budget so the failure and the deadline timer are due together:
  // the failure's promise callback runs first, and must see the budget as spent.
  const result = await hedgedCall<string>({
    hedgeDelayMs: 0,
    hedgeRequests: 0,
    budgetMs: 20,
    startAttempt: async () => {
      const until = performance.now() + 25
      while (performance.now() < until) { /* busy: simulates a saturated event loop */ }
      return { ok: false, reason: 'timeout', detail: 'attempt timed out' }
    }
  })
  t.equal(result.kind, 'deadline')
})

t.test('cancelling (the client went away) aborts every running attempt', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const client = new AbortController()
  const call = run({ startAttempt, hedgeDelayMs: 0, cancelSignal: client.signal })
  await sleep(5)
  client.abort()
  const result = await call
  t.equal(result.kind, 'cancelled')
  t.equal(started.length, 3)
  await teardown()
  for (const attempt of started) t.equal(attempt.signal.reason, 'cancelled')
})

t.test('an already cancelled call starts nothing', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const result = await run({ startAttempt, cancelSignal: AbortSignal.abort() })
  t.equal(result.kind, 'cancelled')
  t.equal(started.length, 0)
})

t.test('a budget already spent starts nothing', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const result = await run({ startAttempt, budgetMs: -3 })
  t.equal(result.kind, 'deadline')
  t.equal(started.length, 0)
})

t.test('an attempt that throws or rejects counts as a failure, never as a crash', async (t) => {
  const result = await hedgedCall<string>({
    ...base,
    hedgeDelayMs: 0,
    startAttempt: (_signal, n) => {
      if (n === 1) throw new Error('sync bug')
      if (n === 2) return Promise.reject(new Error('async bug'))
      return Promise.resolve({ ok: true, value: 'third' })
    }
  })
  t.match(result, { kind: 'success', winner: 3 })
  t.match(result.attempts, [
    { result: 'error', detail: 'Error: sync bug' },
    { result: 'error', detail: 'Error: async bug' },
    { result: 'success' }
  ])
})

t.test('the cancel listener is removed once the call is decided', async (t) => {
  const client = new AbortController()
  const result = await hedgedCall<string>({
    ...base,
    cancelSignal: client.signal,
    startAttempt: () => Promise.resolve({ ok: true, value: 'x' })
  })
  t.equal(result.kind, 'success')
  t.equal(getEventListeners(client.signal, 'abort').length, 0, 'no listener left on the client signal')
})

t.test('a refused hedge is not fired, and the call keeps waiting for attempt 1', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  let asked = 0
  const call = run({ startAttempt, hedgeDelayMs: 20, mayHedge: () => { asked++; return false } })
  await sleep(60)
  t.equal(started.length, 1, 'no hedge')
  t.equal(asked, 1, 'asked once, when the hedge was due')
  started[0]?.succeed('alone')
  t.match(await call, { kind: 'success', winner: 1 })
})

t.test('a refused hedge after an early failure ends the call as all_failed at once', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeDelayMs: 500, mayHedge: () => false })
  started[0]?.fail('http_error')
  const result = await call
  t.match(result, { kind: 'all_failed', failures: ['attempt 1: http_error'] })
  t.equal(started.length, 1)
})

t.test('an allowed hedge fires as usual', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, hedgeDelayMs: 10, mayHedge: () => true })
  await sleep(30)
  t.equal(started.length, 3)
  started[1]?.succeed('hedge')
  t.match(await call, { kind: 'success', winner: 2 })
})

t.test('a large teardown is worked off in slices: timers that fall due meanwhile are not held up', async (t) => {
  const busyFor = (ms: number): void => {
    const until = performance.now() + ms
    while (performance.now() < until) { /* an expensive abort, e.g. closing a connection */ }
  }
  const client = new AbortController()
  const signals: AbortSignal[] = []
  const calls = Array.from({ length: 20 }, () => hedgedCall<string>({
    ...base,
    hedgeDelayMs: 0,
    cancelSignal: client.signal,
    startAttempt: (signal) => {
      signals.push(signal)
      signal.addEventListener('abort', () => busyFor(1))
      return new Promise(() => {})
    }
  }))
  await sleep(5)
  t.equal(signals.length, 60)
  client.abort()
  await Promise.all(calls)
  const abortedWhenTimerRan = await new Promise<number>((resolve) => {
    setTimeout(() => resolve(signals.filter((signal) => signal.aborted).length), 0)
  })
  t.ok(abortedWhenTimerRan > 0 && abortedWhenTimerRan < 60, `the timer ran amid the teardown, after ${abortedWhenTimerRan} of 60 aborts`)
  await sleep(150)
  t.equal(signals.filter((signal) => signal.aborted).length, 60, 'every attempt was aborted in the end')
})

/** Keeps the event loop busy, as a service under load does. */
function busy (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
}

t.test('a hedge that falls due after the deadline is never sent, whichever timer Node runs first', async (t) => {
  // Node keeps one timer list per duration and runs due lists in the order of their first timer. A list of
  // the hedge's duration started earlier (by another call) comes due first, and then runs this call's hedge
  // timer too, before this call's earlier deadline timer, when the loop is late for both.
  const earlierCallsHedge = setTimeout(() => {}, 60)
  await sleep(20)
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, budgetMs: 41, hedgeDelayMs: 60 })
  busy(100)
  const result = await call
  clearTimeout(earlierCallsHedge)
  t.equal(result.kind, 'deadline')
  t.equal(started.length, 1, 'only attempt 1 was started')
})

t.test('an attempt that fails after the deadline, before its timer ran, ends the call as a deadline without hedging', async (t) => {
  const { started, startAttempt } = controlledAttempts()
  const call = run({ startAttempt, budgetMs: 30, hedgeDelayMs: 200 })
  busy(40)
  started[0]?.fail('500')
  const result = await call
  t.equal(result.kind, 'deadline')
  t.equal(started.length, 1, 'no hedge after the deadline')
})
