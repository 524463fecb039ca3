import t from 'tap'
import { SlidingAverage } from '../../lib/sliding-average.js'

t.test('the mean of the samples taken within the window', async (t) => {
  const average = new SlidingAverage(1000)
  t.equal(average.add(0, 400), 400, 'one sample is its own mean')
  t.equal(average.add(100, 0), 200)
  t.equal(average.add(200, 200), 200)
  t.equal(average.add(999, 0), 150, 'still within 1000 ms of the first')
  t.equal(average.add(1000, 0), 50, 'the sample of t=0 left the window: (0 + 200 + 0 + 0) / 4')
  t.equal(average.add(5000, 30), 30, 'after a long quiet gap only the new sample counts')
})

t.test('one slow sample among quiet ones stays below a long wait that lasts', async (t) => {
  const burst = new SlidingAverage(1000)
  const lasting = new SlidingAverage(1000)
  let burstMean = 0
  let lastingMean = 0
  for (let at = 0; at < 2000; at += 100) {
    burstMean = burst.add(at, at === 1000 ? 400 : 2)
    lastingMean = lasting.add(at, 250)
  }
  t.ok(burstMean < 50, `a single 400 ms wait in a second: mean ${burstMean}`)
  t.equal(lastingMean, 250)
})
