import t from 'tap'
import { HedgeBudget } from '../../lib/hedge-budget.js'

t.test('allows hedges while more than half the tokens are left', async (t) => {
  const budget = new HedgeBudget(10, 0.5)
  t.ok(budget.allowsHedge(), 'a full bucket allows')
  for (let i = 0; i < 4; i++) budget.recordFailure()
  t.ok(budget.allowsHedge(), '6 of 10 tokens still allow')
  budget.recordFailure()
  t.notOk(budget.allowsHedge(), '5 of 10 is not more than half')
  for (let i = 0; i < 100; i++) budget.recordFailure()
  budget.recordSuccess()
  budget.recordSuccess()
  t.notOk(budget.allowsHedge(), 'failures never push the bucket below empty: 2 successes give 1 token')
  for (let i = 0; i < 10; i++) budget.recordSuccess()
  t.ok(budget.allowsHedge(), 'successes refill it')
  for (let i = 0; i < 100; i++) budget.recordSuccess()
  for (let i = 0; i < 4; i++) budget.recordFailure()
  t.ok(budget.allowsHedge(), 'successes never fill it above its size: 4 failures leave 6')
  budget.recordFailure()
  t.notOk(budget.allowsHedge())
})
