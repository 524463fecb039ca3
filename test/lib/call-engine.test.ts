import t from 'tap'
import { getEventListeners, setMaxListeners } from 'node:events'
import { setImmediate as nextCheckPhase, setTimeout as sleep } from 'node:timers/promises'
import { runCall, type AttemptContext, type AttemptOutcome, type CallOptions, type LaunchSchedule } from '../../lib/call-engine.js'
import { FakeClock } from '../helpers/fake-clock.js'

type Outcome = AttemptOutcome<string>

/** An attempt the test finishes by hand, with what the engine gave it and when (on the fake clock) it started. */
interface ControlledAttempt extends AttemptContext {
  startedAt: number
  succeed (value: string): void
  fail (reason: string): void
}

const HEDGED: LaunchSchedule = { initial: 1, hedge: { attempts: 2, afterMs: 40 } }
const FAN_OUT: LaunchSchedule = { initial: 3 }

function setup (options: Partial<CallOptions<string>> = {}) {
  const clock = new FakeClock()
  const started: ControlledAttempt[] = []
  const startAttempt = (context: AttemptContext): Promise<Outcome> => new Promise((resolve) => {
    started.push({
      ...context,
      startedAt: clock.now(),
      succeed: (value) => resolve({ ok: true, value }),
      fail: (reason) => resolve({ ok: false, reason, detail: `attempt ${context.attempt}: ${reason}` })
    })
  })
  const call = runCall<string>({ schedule: HEDGED, completion: 'first-success', startAttempt, deadline: 1000, clock, ...options })
  return { clock, started, call }
}

/** Lets the attempts' outcomes reach the engine (promise callbacks), and the teardown after an ending run. */
const settle = async (): Promise<void> => { await nextCheckPhase() }

t.test('first success: a quick first attempt wins alone, and no hedge is sent', async (t) => {
  const { clock, started, call } = setup()
  started[0]?.succeed('first')
  const result = await call
  t.match(result, { ending: 'complete', successes: [{ attempt: 1, value: 'first' }], attempts: [{ attempt: 1, result: 'success' }] })
  clock.advance(100)
  t.equal(started.length, 1, 'the hedge timer was cleared')
  t.equal(clock.pendingTimers(), 0, 'and the deadline timer')
})

t.test('every attempt gets its signal, its number and the one deadline', async (t) => {
  const { clock, started, call } = setup({ deadline: 700 })
  clock.advance(40)
  t.match(started.map(({ attempt, deadline }) => ({ attempt, deadline })), [{ attempt: 1, deadline: 700 }, { attempt: 2, deadline: 700 }, { attempt: 3, deadline: 700 }])
  t.ok(started.every(({ signal }) => signal instanceof AbortSignal && !signal.aborted))
  started[0]?.succeed('x')
  await call
})

t.test('after the hedge delay the hedges start together, the first success wins, the others are aborted after the answer', async (t) => {
  const { clock, started, call } = setup()
  clock.advance(39)
  t.equal(started.length, 1, 'only attempt 1 before the delay')
  clock.advance(1)
  t.same(started.map(({ startedAt }) => startedAt), [0, 40, 40], 'both hedges exactly at the delay')
  started[2]?.succeed('third')
  const result = await call
  t.match(result, { ending: 'complete', successes: [{ attempt: 3, value: 'third' }] })
  t.equal(started[0]?.signal.aborted, false, 'the answer comes first: the losers are still running when it is known')
  await settle()
  t.same(started.map(({ signal }) => signal.reason as unknown), ['lost', 'lost', undefined], 'losers aborted as lost, the winner left alone')
  t.match(result.attempts, [{ attempt: 1, result: 'aborted' }, { attempt: 2, result: 'aborted' }, { attempt: 3, result: 'success' }])
})

t.test('when attempt 1 fails before the hedge delay, the hedges start at once', async (t) => {
  const { clock, started, call } = setup({ schedule: { initial: 1, hedge: { attempts: 2, afterMs: 500 } } })
  clock.advance(10)
  started[0]?.fail('http_error')
  await settle()
  t.same(started.map(({ startedAt }) => startedAt), [0, 10, 10], 'at the failure, not at the timer')
  started[1]?.fail('timeout')
  started[2]?.succeed('late winner')
  const result = await call
  t.match(result, { ending: 'complete', successes: [{ attempt: 3 }] })
  t.match(result.attempts, [{ result: 'http_error' }, { result: 'timeout' }, { result: 'success' }])
})

t.test('first success: never more than the schedule allows, and every attempt failing completes with no success', async (t) => {
  const { clock, started, call } = setup()
  clock.advance(40)
  for (const attempt of started) attempt.fail('http_error')
  const result = await call
  t.equal(started.length, 3)
  t.match(result, { ending: 'complete', successes: [], failures: ['attempt 1: http_error', 'attempt 2: http_error', 'attempt 3: http_error'] })
})

t.test('without hedges there is one attempt and no hedge timer', async (t) => {
  const { clock, started, call } = setup({ schedule: { initial: 1, hedge: { attempts: 0, afterMs: 0 } } })
  t.equal(clock.pendingTimers(), 1, 'the deadline timer only')
  started[0]?.fail('invalid_json')
  t.match(await call, { ending: 'complete', successes: [], attempts: [{ result: 'invalid_json' }] })
})

t.test('the deadline ends the call exactly when it falls due and aborts every attempt still running', async (t) => {
  const { clock, started, call } = setup({ deadline: 80 })
  clock.advance(200)
  const result = await call
  t.equal(result.ending, 'deadline')
  t.match(result.attempts, [{ result: 'aborted', endedAt: 80 }, { result: 'aborted', endedAt: 80 }, { result: 'aborted', endedAt: 80 }])
  await settle()
  t.same(started.map(({ signal }) => signal.reason as unknown), ['deadline', 'deadline', 'deadline'])
  started[0]?.succeed('too late')
  await settle()
  t.equal(result.attempts.length, 3, 'a late outcome is not written into the ended call')
  t.ok(result.attempts.every((attempt) => attempt.result === 'aborted'))
})

t.test('a deadline timer that fires early ends nothing: the rest of the time is waited for', async (t) => {
  const { clock, started, call } = setup({ deadline: 80, schedule: FAN_OUT })
  clock.advance(78)
  clock.fireEarly(2)
  started[0]?.succeed('just in time')
  await settle()
  t.match(await call, { ending: 'complete', successes: [{ attempt: 1 }] }, 'a success 2 ms before the deadline still counts')

  const late = setup({ deadline: 80, schedule: FAN_OUT })
  late.clock.advance(78)
  late.clock.fireEarly(2)
  late.clock.advance(2)
  t.match(await late.call, { ending: 'deadline', attempts: [{ endedAt: 80 }, { endedAt: 80 }, { endedAt: 80 }] }, 'and the deadline comes exactly at its time')
})

t.test('the attempts are aborted before any timer or I/O callback that follows the end of the call', async (t) => {
  const { clock, started, call } = setup()
  clock.advance(40)
  started[1]?.succeed('second')
  await call
  const seenByNextTimer = await new Promise<boolean[]>((resolve) => {
    setTimeout(() => resolve(started.map(({ signal }) => signal.aborted)), 0)
  })
  t.same(seenByNextTimer, [true, false, true], 'aborted by the time the next timer runs; the winner left alone')
})

t.test('an attempt that fails after the deadline, before the deadline timer ran, ends the call as a deadline without hedging', async (t) => {
  const { clock, started, call } = setup({ deadline: 30, schedule: { initial: 1, hedge: { attempts: 2, afterMs: 200 } } })
  clock.stall(40)
  started[0]?.fail('timeout')
  const result = await call
  t.equal(result.ending, 'deadline')
  t.equal(started.length, 1, 'no hedge after the deadline')
})

t.test('the last attempt failing after the deadline, before the deadline timer ran, is still a deadline', async (t) => {
  const { clock, started, call } = setup({ deadline: 30, schedule: FAN_OUT })
  started[0]?.fail('http_error')
  started[1]?.fail('http_error')
  await settle()
  clock.stall(40)
  started[2]?.fail('timeout')
  t.match(await call, { ending: 'deadline', successes: [] })
})

t.test('a hedge due at the deadline is never scheduled, even when the deadline timer fires early', async (t) => {
  const { clock, started, call } = setup({ deadline: 300, schedule: { initial: 1, hedge: { attempts: 2, afterMs: 300 } } })
  t.equal(clock.pendingTimers(), 1, 'the deadline timer only')
  clock.advance(298)
  clock.fireEarly(2)
  t.equal(started.length, 1, 'no hedge in the last moments before the deadline')
  clock.advance(2)
  t.match(await call, { ending: 'deadline', attempts: [{ attempt: 1, result: 'aborted' }] })
})

t.test('a hedge that falls due after the deadline is never sent, whichever timer runs first', async (t) => {
  // Node keeps one timer list per duration and runs due lists in the order of their first timer: when the loop is
  // late for both, another call's list can make this call's hedge timer run before its earlier deadline timer.
  const { clock, started, call } = setup({ deadline: 41, schedule: { initial: 1, hedge: { attempts: 2, afterMs: 60 } } })
  clock.jumpLate(100)
  const result = await call
  t.equal(result.ending, 'deadline')
  t.equal(started.length, 1, 'only attempt 1 was started')
})

t.test('the client leaving aborts every running attempt', async (t) => {
  const client = new AbortController()
  const { clock, started, call } = setup({ cancelSignal: client.signal })
  clock.advance(40)
  client.abort()
  const result = await call
  t.equal(result.ending, 'cancelled')
  await settle()
  t.same(started.map(({ signal }) => signal.reason as unknown), ['cancelled', 'cancelled', 'cancelled'])
})

t.test('a call whose client has already left starts nothing', async (t) => {
  const { started, call } = setup({ cancelSignal: AbortSignal.abort() })
  t.equal((await call).ending, 'cancelled')
  t.equal(started.length, 0)
})

t.test('a deadline already past starts nothing', async (t) => {
  const { started, call } = setup({ deadline: -3 })
  t.equal((await call).ending, 'deadline')
  t.equal(started.length, 0)
})

t.test('an attempt that throws or rejects counts as a failure, never as a crash', async (t) => {
  const result = await runCall<string>({
    schedule: FAN_OUT,
    completion: 'first-success',
    deadline: 1000,
    clock: new FakeClock(),
    startAttempt: ({ attempt }) => {
      if (attempt === 1) throw new Error('sync bug')
      if (attempt === 2) return Promise.reject(new Error('async bug'))
      return Promise.resolve({ ok: true, value: 'third' })
    }
  })
  t.match(result, { ending: 'complete', successes: [{ attempt: 3 }] })
  t.match(result.attempts, [{ result: 'error', detail: 'Error: sync bug' }, { result: 'error', detail: 'Error: async bug' }, { result: 'success' }])
})

t.test('the cancel listener is removed once the call has ended', async (t) => {
  const client = new AbortController()
  const { started, call } = setup({ cancelSignal: client.signal })
  started[0]?.succeed('x')
  await call
  t.equal(getEventListeners(client.signal, 'abort').length, 0, 'no listener left on the client signal')
})

t.test('a refused hedge is not sent, is asked once, and the call keeps waiting for attempt 1', async (t) => {
  const asked: number[] = []
  const { clock, started, call } = setup({ mayHedge: (timeLeftMs) => { asked.push(timeLeftMs); return false } })
  clock.advance(100)
  t.equal(started.length, 1, 'no hedge')
  t.same(asked, [1000 - 40], 'asked once, when the hedge was due, with the time left until the deadline')
  started[0]?.succeed('alone')
  t.match(await call, { ending: 'complete', successes: [{ attempt: 1 }] })
})

t.test('a refused hedge after an early failure ends the call at once, with no success', async (t) => {
  const asked: number[] = []
  const { clock, started, call } = setup({ mayHedge: (timeLeftMs) => { asked.push(timeLeftMs); return false } })
  clock.advance(15)
  started[0]?.fail('http_error')
  t.match(await call, { ending: 'complete', successes: [], failures: ['attempt 1: http_error'] })
  t.equal(started.length, 1)
  t.same(asked, [1000 - 15], 'asked at the failure, with the time left then')
})

t.test('an allowed hedge goes out as usual', async (t) => {
  const { clock, started, call } = setup({ mayHedge: () => true })
  clock.advance(40)
  t.equal(started.length, 3)
  started[1]?.succeed('hedge')
  t.match(await call, { successes: [{ attempt: 2 }] })
})

t.test('fan-out: every attempt starts at once, with no hedge timer', async (t) => {
  const { clock, started, call } = setup({ schedule: FAN_OUT })
  t.same(started.map(({ attempt, startedAt }) => [attempt, startedAt]), [[1, 0], [2, 0], [3, 0]])
  t.equal(clock.pendingTimers(), 1, 'the deadline timer only')
  started[1]?.succeed('second')
  t.match(await call, { ending: 'complete', successes: [{ attempt: 2, value: 'second' }] })
})

t.test('every attempt: the call ends once all have ended, with the successes in the order they arrived', async (t) => {
  const { clock, started, call } = setup({ schedule: FAN_OUT, completion: 'every-attempt' })
  clock.advance(10)
  started[2]?.succeed('third')
  await settle()
  clock.advance(10)
  started[0]?.fail('http_error')
  await settle()
  clock.advance(10)
  started[1]?.succeed('second')
  const result = await call
  t.match(result, { ending: 'complete', successes: [{ attempt: 3, value: 'third' }, { attempt: 2, value: 'second' }], failures: ['attempt 1: http_error'] })
  t.match(result.attempts, [{ result: 'http_error', endedAt: 20 }, { result: 'success', endedAt: 30 }, { result: 'success', endedAt: 10 }])
})

t.test('every attempt: every one failing completes with no success', async (t) => {
  const { started, call } = setup({ schedule: FAN_OUT, completion: 'every-attempt' })
  for (const attempt of started) attempt.fail('http_error')
  t.match(await call, { ending: 'complete', successes: [], failures: { length: 3 } })
})

t.test('every attempt: the deadline ends the call with the successes so far, and aborts the rest', async (t) => {
  const { clock, started, call } = setup({ schedule: FAN_OUT, completion: 'every-attempt', deadline: 100 })
  started[1]?.succeed('early')
  await settle()
  clock.advance(100)
  const result = await call
  t.match(result, { ending: 'deadline', successes: [{ attempt: 2, value: 'early' }] })
  t.match(result.attempts, [{ result: 'aborted' }, { result: 'success' }, { result: 'aborted' }])
  await settle()
  t.same(started.map(({ signal }) => signal.reason as unknown), ['deadline', undefined, 'deadline'])
})

t.test('every attempt with a hedge schedule: no hedge once an attempt has succeeded', async (t) => {
  const { clock, started, call } = setup({ completion: 'every-attempt' })
  started[0]?.succeed('first')
  await settle()
  t.equal(clock.pendingTimers(), 2, 'the call goes on: its hedge timer and its deadline timer')
  clock.advance(40)
  const result = await call
  t.equal(started.length, 1, 'the hedge timer sent nothing, and with nothing left running the call completed')
  t.match(result, { ending: 'complete', successes: [{ attempt: 1 }] })
})

t.test('every attempt with a hedge schedule: a failure after a success sends no hedge', async (t) => {
  const { started, call } = setup({ schedule: { initial: 2, hedge: { attempts: 2, afterMs: 40 } }, completion: 'every-attempt' })
  started[0]?.succeed('first')
  await settle()
  started[1]?.fail('http_error')
  const result = await call
  t.equal(started.length, 2)
  t.match(result, { ending: 'complete', successes: [{ attempt: 1 }], failures: ['attempt 2: http_error'] })
})

t.test('a large teardown is worked off in slices: timers that fall due meanwhile are not held up', async (t) => {
  const busyFor = (ms: number): void => {
    const until = performance.now() + ms
    while (performance.now() < until) { /* an expensive abort, e.g. closing a connection */ }
  }
  const client = new AbortController()
  // One signal that 20 calls listen to: more than Node's default warning threshold.
  setMaxListeners(20, client.signal)
  const signals: AbortSignal[] = []
  const calls = Array.from({ length: 20 }, () => runCall<string>({
    schedule: FAN_OUT,
    completion: 'first-success',
    deadline: 1000,
    clock: new FakeClock(),
    cancelSignal: client.signal,
    startAttempt: ({ signal }) => {
      signals.push(signal)
      signal.addEventListener('abort', () => busyFor(1))
      return new Promise(() => {})
    }
  }))
  t.equal(signals.length, 60)
  // From a timer callback, as a deadline timer is: the check phase, with the first slice, comes before the next timers.
  await sleep(5)
  client.abort()
  await Promise.all(calls)
  const abortedWhenTimerRan = await new Promise<number>((resolve) => {
    setTimeout(() => resolve(signals.filter((signal) => signal.aborted).length), 0)
  })
  t.ok(abortedWhenTimerRan > 0 && abortedWhenTimerRan < 60, `the timer ran amid the teardown, after ${abortedWhenTimerRan} of 60 aborts`)
  await sleep(150)
  t.equal(signals.filter((signal) => signal.aborted).length, 60, 'every attempt was aborted in the end')
})
