import t from 'tap'
import { ShedShare } from '../../lib/shed-share.js'

t.test('the share grows by a tenth per overloaded sample, up to all, and falls as fast once the wait is gone', async (t) => {
  const shed = new ShedShare()
  t.equal(shed.share, 0, 'nothing shed at first')
  t.equal(shed.update(false), 0, 'never below nothing')
  t.equal(shed.update(true), 0.1)
  t.equal(shed.update(true), 0.2)
  for (let sample = 0; sample < 20; sample++) shed.update(true)
  t.equal(shed.share, 1, 'everything after ten overloaded samples, and never more')
  t.equal(shed.update(false), 0.9)
  for (let sample = 0; sample < 9; sample++) shed.update(false)
  t.equal(shed.share, 0)
})

t.test('each request is shed with the probability of the share', async (t) => {
  const shed = new ShedShare()
  t.notOk(shed.sheds(() => 0), 'at 0 nothing is shed, whatever the draw')
  for (let sample = 0; sample < 3; sample++) shed.update(true)
  t.ok(shed.sheds(() => 0.29), 'at 0.3 a draw below 0.3 is shed')
  t.notOk(shed.sheds(() => 0.3), 'and one at 0.3 or above is served')
  for (let sample = 0; sample < 7; sample++) shed.update(true)
  t.ok(shed.sheds(() => 0.999), 'at 1 everything is shed')
  t.type(shed.sheds(), 'boolean', 'Math.random by default')
})
