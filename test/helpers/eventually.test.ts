import t from 'tap'
import { eventually } from './eventually.js'

t.test('resolves once the condition holds, with how long that took', async (t) => {
  const startedAt = performance.now()
  const ms = await eventually(() => performance.now() - startedAt >= 30, 1000)
  t.ok(ms >= 30 && ms < 500, `after ${ms.toFixed(1)} ms`)
  t.ok(await eventually(() => true, 0) < 5, 'at once, for a condition that already holds')
})

t.test('takes an asynchronous condition, checked at the given interval', async (t) => {
  let checks = 0
  const ms = await eventually(async () => ++checks === 4, 1000, 20)
  t.equal(checks, 4)
  t.ok(ms >= 55, `three waits of 20 ms (${ms.toFixed(1)} ms)`)
})

t.test('rejects once the time is up, and with the error of a condition that throws', async (t) => {
  await t.rejects(eventually(() => false, 30), { message: 'condition not met within 30 ms' })
  await t.rejects(eventually(() => { throw new Error('child exited') }, 1000), { message: 'child exited' })
})
