import t from 'tap'
import { AdaptiveHedgeDelay, BOUND_RATIO, MIN_SAMPLES, RECOMPUTE_EVERY_MS, WINDOW_MS, WINDOW_SAMPLES } from '../../lib/adaptive-hedge-delay.js'

/** A delay on a clock the test moves by hand. */
function setup (quantile = 0.9, fallbackMs = 300) {
  const clock = { now: 0 }
  const delay = new AdaptiveHedgeDelay({ quantile, fallbackMs, now: () => clock.now })
  /** Records `count` successes with latencies spread evenly from `lowMs` to `highMs`. */
  const record = (count: number, lowMs: number, highMs: number): void => {
    for (let i = 0; i < count; i++) delay.recordSuccess(lowMs + (highMs - lowMs) * i / Math.max(count - 1, 1))
  }
  const later = (ms = RECOMPUTE_EVERY_MS): void => { clock.now += ms }
  return { delay, record, later, clock }
}

t.test('HEDGE_DELAY_MS holds until the window has enough samples', async (t) => {
  const { delay, record, later } = setup()
  t.equal(delay.delayMs(), 300)
  t.equal(delay.fastestMs(), undefined)
  record(MIN_SAMPLES - 1, 20, 120)
  later()
  t.equal(delay.delayMs(), 300)
  record(1, 20, 20)
  later()
  t.not(delay.delayMs(), 300)
})

t.test('the delay is the quantile of recent successes, whatever the upstream\'s speed', async (t) => {
  const fast = setup(0.9)
  fast.record(101, 20, 120)
  fast.later()
  t.equal(fast.delay.delayMs(), 110, 'p90 of 20..120 ms')
  t.equal(fast.delay.fastestMs(), 20)

  const slow = setup(0.9)
  slow.record(101, 200, 1200)
  slow.later()
  t.equal(slow.delay.delayMs(), 1100, 'p90 of 200..1200 ms')

  const median = setup(0.5)
  median.record(101, 100, 600)
  median.later()
  t.equal(median.delay.delayMs(), 350)
})

t.test('it follows an upstream that slows down, then speeds up again', async (t) => {
  const { delay, record, later } = setup(0.9)
  record(200, 100, 600)
  later()
  t.equal(delay.delayMs(), 550)
  later(WINDOW_MS)
  record(201, 200, 1200)
  later()
  t.equal(delay.delayMs(), 1100, 'the fast samples have left the window')
  later(WINDOW_MS)
  record(100, 20, 120)
  later()
  t.equal(delay.delayMs(), 110)
})

t.test('the window keeps the last WINDOW_SAMPLES samples only', async (t) => {
  const { delay, record, later } = setup(0.9)
  record(WINDOW_SAMPLES, 1000, 1000)
  record(WINDOW_SAMPLES, 100, 100)
  later()
  t.equal(delay.delayMs(), 100)
})

t.test('samples older than WINDOW_MS no longer count; with too few left, HEDGE_DELAY_MS holds again', async (t) => {
  const { delay, record, later } = setup()
  record(100, 50, 50)
  later()
  t.equal(delay.delayMs(), 50)
  t.equal(delay.fastestMs(), 50)
  later(WINDOW_MS)
  t.equal(delay.delayMs(), 300)
  t.equal(delay.fastestMs(), undefined)
})

t.test('the delay stays within HEDGE_DELAY_MS divided or multiplied by BOUND_RATIO', async (t) => {
  const stalled = setup(0.9, 300)
  stalled.record(100, 60_000, 60_000)
  stalled.later()
  t.equal(stalled.delay.delayMs(), 300 * BOUND_RATIO)

  const cached = setup(0.9, 300)
  cached.record(100, 1, 2)
  cached.later()
  t.equal(cached.delay.delayMs(), 300 / BOUND_RATIO)
  t.equal(cached.delay.fastestMs(), 1, 'the fastest success is not bounded: it only says what is hopeless')

  const zero = setup(0.9, 0)
  zero.record(100, 50, 60)
  zero.later()
  t.equal(zero.delay.delayMs(), 0, 'HEDGE_DELAY_MS=0 stays 0')
})

t.test('on the real clock by default', async (t) => {
  const delay = new AdaptiveHedgeDelay({ quantile: 0.9, fallbackMs: 300 })
  for (let i = 0; i < MIN_SAMPLES; i++) delay.recordSuccess(42)
  t.equal(delay.delayMs(), 42)
})

t.test('the quantile is recomputed at most every RECOMPUTE_EVERY_MS', async (t) => {
  const { delay, record, later } = setup(0.9)
  record(100, 100, 100)
  later()
  t.equal(delay.delayMs(), 100)
  record(WINDOW_SAMPLES, 500, 500)
  later(RECOMPUTE_EVERY_MS - 1)
  t.equal(delay.delayMs(), 100, 'still the value computed a moment ago')
  later(1)
  t.equal(delay.delayMs(), 500)
})
