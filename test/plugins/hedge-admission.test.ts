import t from 'tap'
import { eventually } from '../helpers/eventually.js'
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

/** Metrics text of the service. */
async function metricsOf (url: string): Promise<string> {
  return (await call(`${url}/metrics`)).text
}

t.test('pushback: 503 with Retry-After pauses every hedge, that call\'s included, until then; first attempts still go out', async (t) => {
  let pushingBack = true
  const { service, upstream } = await withService(t, {
    script: (n) => {
      if (pushingBack && n === 1) return { kind: 'json', status: 503, headers: { 'retry-after': '1' } }
      return n === 2 || n === 6 ? { kind: 'hang' } : { kind: 'json', body: { n }, delayMs: 30 }
    },
    env: { LOG_LEVEL: 'info' }
  })
  const pushedBack = await call(`${service.url}/api/smart?timeout=1000`)
  t.equal(pushedBack.status, 502, 'the failed first attempt sent no hedges')
  t.match(pushedBack.json, { message: 'Every upstream attempt failed: status 503, Retry-After 1.' })
  t.equal(upstream.requests.length, 1)
  pushingBack = false

  const begin = performance.now()
  const paused = await call(`${service.url}/api/smart?timeout=500`)
  t.equal(paused.status, 408, 'a hung first attempt during the pause: the hedge due at 300 ms was held back')
  t.equal(upstream.requests.length, 2)
  let metrics = await metricsOf(service.url)
  t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="pushback"}'), 2)
  const pause = sample(metrics, 'smart_hedge_pause_seconds')
  t.ok(pause > 0 && pause <= 1 - (performance.now() - begin) / 1000 + 0.01, `pause left: ${pause} s`)

  const fanOut = await call(`${service.url}/api/first?timeout=1000`)
  t.equal(fanOut.status, 200)
  t.equal(upstream.requests.length, 5, 'the fan-out endpoints still send their three attempts')

  await eventually(async () => sample(await metricsOf(service.url), 'smart_hedge_pause_seconds') === 0, 1500)
  const resumed = await call(`${service.url}/api/smart?timeout=1000`)
  t.equal(resumed.status, 200, 'after the pause, hedges go out again')
  t.same(resumed.json, { success: true, response: { n: 7 } }, 'the first attempt hung: a hedge answered')
  metrics = await metricsOf(service.url)
  t.equal(sample(metrics, 'smart_hedge_wins_total'), 1)
  t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="pushback"}'), 2)
  t.equal(service.logs.filter((line) => line.msg === 'upstream pushback: hedges paused').length, 1, 'one log line per pause')
  t.match(service.logs.find((line) => line.msg === 'upstream pushback: hedges paused'), { statusCode: 503, retryAfter: '1', pauseMs: 1000 })
})

t.test('pushback is capped by MAX_PUSHBACK_MS, and MAX_PUSHBACK_MS=0 ignores it', async (t) => {
  const script = (n: number): UpstreamBehaviour => n === 1 ? { kind: 'json', status: 429, headers: { 'retry-after': '3600' } } : { kind: 'json' }
  const capped = await withService(t, { script, env: { MAX_PUSHBACK_MS: '200' } })
  t.equal((await call(`${capped.service.url}/api/smart?timeout=1000`)).status, 502)
  const pause = sample(await metricsOf(capped.service.url), 'smart_hedge_pause_seconds')
  t.ok(pause > 0 && pause <= 0.2, `an hour asked, ${pause} s imposed`)
  await eventually(async () => sample(await metricsOf(capped.service.url), 'smart_hedge_pause_seconds') === 0, 1000)

  const ignored = await withService(t, { script, env: { MAX_PUSHBACK_MS: '0' } })
  const answer = await call(`${ignored.service.url}/api/smart?timeout=1000`)
  t.equal(answer.status, 200, 'the first attempt failed: its hedges went out at once')
  t.equal(ignored.upstream.requests.length, 3)
  t.equal(sample(await metricsOf(ignored.service.url), 'smart_hedge_pause_seconds'), 0)
})

/** Runs `count` calls to /api/smart, `parallel` at a time. */
async function smartCalls (url: string, count: number, parallel: number): Promise<void> {
  for (let sent = 0; sent < count; sent += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, count - sent) }, () => call(`${url}/api/smart?timeout=2000`)))
  }
}

t.test('adaptive: the hedge delay follows the upstream as it slows down and speeds up again', async (t) => {
  let latencyMs = 80
  let hangNext = false
  const { service, upstream } = await withService(t, {
    script: () => {
      if (hangNext) {
        hangNext = false
        return { kind: 'hang' }
      }
      return { kind: 'json', delayMs: latencyMs }
    },
    env: { HEDGE_POLICY: 'adaptive', HEDGE_DELAY_MS: '300' }
  })
  const delaySeconds = async (): Promise<number> => sample(await metricsOf(service.url), 'smart_hedge_delay_seconds')
  t.equal(await delaySeconds(), 0.3, 'HEDGE_DELAY_MS until there are enough samples')

  // Bounds rather than exact values: under a loaded machine the 80 ms answers take a little longer.
  await smartCalls(service.url, 40, 20)
  await eventually(async () => await delaySeconds() < 0.15, 1000)
  t.ok(await delaySeconds() >= 0.08, 'fast upstream: the delay fell to its p90, from 300 ms to about 80')
  hangNext = true
  const before = upstream.requests.length
  t.equal((await call(`${service.url}/api/smart?timeout=2000`)).status, 200)
  const [first, hedge] = upstream.requests.slice(before)
  const hedgeAfter = (hedge?.arrivedAt as number) - (first?.arrivedAt as number)
  t.ok(hedgeAfter >= 70 && hedgeAfter < 150 + 50, `a hung first attempt is hedged after ${hedgeAfter} ms, not 300`)

  latencyMs = 400
  await smartCalls(service.url, 20, 20)
  await eventually(async () => await delaySeconds() >= 0.4, 1000)
  t.pass('slowed down: the delay rose to the new p90, at least 400 ms')

  latencyMs = 80
  await smartCalls(service.url, 300, 30)
  await eventually(async () => await delaySeconds() < 0.15, 1000)
  t.pass('sped up again: the delay came back down below 150 ms')
})

t.test('adaptive: a hedge that cannot finish in the time left is not sent; fixed sends it', async (t) => {
  for (const policy of ['adaptive', 'fixed']) {
    let hangingFrom = Number.POSITIVE_INFINITY
    const { service, upstream } = await withService(t, {
      script: (n) => n === hangingFrom ? { kind: 'hang' } : { kind: 'json', delayMs: 100 },
      env: { HEDGE_POLICY: policy, HEDGE_DELAY_MS: '50' }
    })
    // Warm up the window: first attempts that succeed after 100 ms.
    await smartCalls(service.url, 30, 10)
    hangingFrom = upstream.requests.length + 1
    // The first attempt hangs. The hedge is due at about 100 ms (the quantile) or at 50 ms (fixed), with about 40
    // or 90 ms left: less than the 100 ms the fastest success took, for adaptive; fixed sends it anyway.
    const answer = await call(`${service.url}/api/smart?timeout=140`)
    t.equal(answer.status, 408, policy)
    const sent = upstream.requests.length - hangingFrom + 1
    const metrics = await metricsOf(service.url)
    if (policy === 'adaptive') {
      t.equal(sent, 1, 'adaptive: only the first attempt was sent')
      t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="hopeless"}'), 1)
    } else {
      t.equal(sent, 3, 'fixed: the reference schedule, whatever the time left')
      t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="hopeless"}'), 0)
    }
  }
})
