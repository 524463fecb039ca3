import t from 'tap'
import { SlidingMedian } from '../../lib/sliding-median.js'

t.test('the median of the samples taken within the window', async (t) => {
  const median = new SlidingMedian(1000)
  t.equal(median.add(0, 400), 400, 'one sample is its own median')
  t.equal(median.add(100, 0), 0, 'of two, the lower: more than half must be high')
  t.equal(median.add(200, 200), 200)
  t.equal(median.add(999, 300), 200, 'still within 1000 ms of the first: 0 200 300 400')
  t.equal(median.add(1000, 500), 200, 'the sample of t=0 left the window: 0 200 300 500 (with it, 300)')
  t.equal(median.add(5000, 30), 30, 'after a long quiet gap only the new sample counts')
})

t.test('one long stall among quiet samples is not a lasting wait; waits that last are', async (t) => {
  const stall = new SlidingMedian(1000)
  const lasting = new SlidingMedian(1000)
  const growing = new SlidingMedian(1000)
  let afterStall = 0
  let afterLasting = 0
  let afterGrowing = 0
  for (let at = 0; at < 2000; at += 100) {
    afterStall = stall.add(at, at === 1500 ? 900 : 2)
    afterLasting = lasting.add(at, 250)
    // A queue that is not drained: each probe waits 100 ms longer than the one before.
    afterGrowing = growing.add(at, Math.max(0, at - 1000))
  }
  t.equal(afterStall, 2, 'a single 900 ms wait in the last second')
  t.equal(afterLasting, 250)
  t.equal(afterGrowing, 400, 'half of the last second waited over 400 ms')
})

t.test('a sample with the key of the newest one replaces it: a probe that still waits counts once', async (t) => {
  // Just after start-up: two quiet probes, then a burst keeps one probe waiting 410 ms, sampled every 100 ms as
  // its age grows and once more when it is taken.
  const probeSamples: Array<[at: number, waitMs: number, probe: number]> = [
    [0, 1, 1], [100, 1, 2], [200, 100, 3], [300, 200, 3], [400, 300, 3], [500, 400, 3], [510, 410, 3]
  ]
  const keyed = new SlidingMedian(1000)
  const medians = probeSamples.map(([at, waitMs, probe]) => keyed.add(at, waitMs, probe))
  t.same(medians, [1, 1, 1, 1, 1, 1, 1], 'one long wait among two quiet probes: the quiet ones are the majority')
  keyed.add(600, 2, 4)
  t.equal(keyed.add(700, 3, 5), 2, 'the next probes are samples of their own: 1 1 2 3 410')

  const unkeyed = new SlidingMedian(1000)
  const unkeyedMedians = probeSamples.map(([at, waitMs]) => unkeyed.add(at, waitMs))
  t.equal(unkeyedMedians.at(-1), 200, 'without keys the same wait, sampled five times, outvotes them: 1 1 100 200 300 400 410')
})

t.test('a probe stuck longer than the window is a lasting wait: once the quiet samples left, its age is the median', async (t) => {
  const median = new SlidingMedian(1000)
  for (let at = 0; at < 1000; at += 100) median.add(at, 1, at)
  let last = 0
  // The probe sent at 1000 is never taken.
  for (let at = 1100; at <= 2000; at += 100) last = median.add(at, at - 1000, 1000)
  t.equal(last, 1000, 'the only sample left is the probe that has waited a second')
  t.equal(median.add(1500 + 1000, 1500, 1000), 1500)
})
