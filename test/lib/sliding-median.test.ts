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
