import t from 'tap'
import { sample } from '../helpers/prometheus.js'
import type { UpstreamBehaviour } from '../helpers/scripted-upstream.js'
import { call, withService } from '../helpers/service.js'

t.test('with the budget on and the upstream down, only the budgeted hedges are sent; hedging returns with the upstream', async (t) => {
  let phase: 'down' | 'up' | 'slow-first' = 'down'
  let slowFirstSent = false
  const { service, upstream } = await withService(t, {
    script: (): UpstreamBehaviour => {
      if (phase === 'down') return { kind: 'json', status: 503 }
      if (phase === 'slow-first' && !slowFirstSent) {
        slowFirstSent = true
        return { kind: 'json', body: { time: 600 }, delayMs: 600 }
      }
      return { kind: 'json', body: { time: 1 } }
    },
    env: { HEDGE_BUDGET_TOKENS: '10', HEDGE_BUDGET_TOKEN_RATIO: '1' }
  })

  for (let i = 0; i < 20; i++) t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 502)
  // 10 tokens: request 1 hedges (3 failures: 7 left), request 2 hedges (4 left), then no more hedges.
  t.equal(upstream.requests.length, 20 + 4, 'at most the budgeted extra attempts reached the down upstream')
  let metrics = (await call(`${service.url}/metrics`)).text
  t.equal(sample(metrics, 'smart_hedges_total'), 2)
  t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="budget"}'), 18)

  phase = 'up'
  for (let i = 0; i < 6; i++) t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200)
  phase = 'slow-first'
  const before = upstream.requests.length
  const answer = await call(`${service.url}/api/smart?timeout=2000`)
  t.equal(answer.status, 200)
  t.equal(upstream.requests.length - before, 3, 'six successes refilled the budget: the hedge fired again')
  metrics = (await call(`${service.url}/metrics`)).text
  t.equal(sample(metrics, 'smart_hedges_total'), 3)
})

t.test('the budget is off by default: a down upstream gets every hedge', async (t) => {
  const { service, upstream } = await withService(t, { script: () => ({ kind: 'json', status: 503 }) })
  for (let i = 0; i < 5; i++) await call(`${service.url}/api/smart?timeout=1000`)
  t.equal(upstream.requests.length, 15)
})
