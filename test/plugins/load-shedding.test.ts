import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { openConnection } from '../helpers/raw-http.js'
import { startScriptedUpstream } from '../helpers/scripted-upstream.js'
import { call, startService, type ClientAnswer } from '../helpers/service.js'
import { sample } from '../helpers/prometheus.js'

/** Keeps this process's event loop busy, as a flood of requests would. */
function saturateEventLoop (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
}

/** Resolves once `condition` holds, checking every 10 ms; rejects after `withinMs`. */
async function waitUntil (condition: () => boolean, withinMs: number): Promise<void> {
  const giveUpAt = performance.now() + withinMs
  while (!condition()) {
    if (performance.now() > giveUpAt) throw new Error(`condition not met within ${withinMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

t.test('a saturated event loop sheds /api/smart with a JSON 503 and Retry-After, but not probes or metrics', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  // The service runs in this process, so blocking this process's event loop saturates the service.
  const service = await startService({ UPSTREAM_URL: upstream.url, OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '30', RETRY_AFTER_SECONDS: '2' })
  t.teardown(async () => {
    await service.app.close()
    await upstream.close()
  })
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'healthy at first')

  // The loop stays saturated while the requests are on their way, so every delay sample taken meanwhile is
  // high however long the requests take to arrive: a single stall would be diluted by the next sample.
  const stalls = setInterval(() => saturateEventLoop(60), 70)
  saturateEventLoop(400)
  // The first delay sample after the long stall may still average in the quiet samples taken before it.
  await waitUntil(() => service.app.isUnderPressure(), 2000)
  const [shed, health, ready, metrics] = await Promise.all([
    call(`${service.url}/api/smart?timeout=1000`),
    call(`${service.url}/health`),
    call(`${service.url}/ready`),
    call(`${service.url}/metrics`)
  ])
  clearInterval(stalls)
  t.equal(shed.status, 503)
  t.equal(shed.headers['retry-after'], '2')
  t.match(shed.json, { success: false, statusCode: 503, error: 'Service Unavailable', message: 'The service is overloaded; retry shortly.' })
  t.equal(upstream.requests.length, 1, 'the shed request never reached the upstream')
  t.equal(health.status, 200, 'liveness is not shed')
  t.equal(ready.status, 200, 'readiness is not shed')
  t.equal(metrics.status, 200, 'metrics are not shed')

  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'back to normal once the loop recovers')
  const { text } = await call(`${service.url}/metrics`)
  t.equal(sample(text, 'smart_requests_total{outcome="overloaded"}'), 1)
})

t.test('beyond MAX_CLIENT_CONNECTIONS new connections are closed at once; the open ones are served', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  const service = await startService({ UPSTREAM_URL: upstream.url, MAX_CLIENT_CONNECTIONS: '2' })
  t.teardown(async () => {
    await service.app.close()
    await upstream.close()
  })
  const first = await openConnection(service.url)
  const second = await openConnection(service.url)
  // Node counts a connection once it has accepted it: give the second one that moment.
  await new Promise((resolve) => setTimeout(resolve, 50))

  const third = connect(Number(new URL(service.url).port), '127.0.0.1')
  third.on('error', () => {})
  let received = ''
  third.on('data', (chunk: Buffer) => { received += chunk.toString() })
  let closed = false
  third.on('close', () => { closed = true })
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.ok(closed, 'the third connection was closed within 500 ms')
  t.equal(received, '', 'without an answer')
  third.destroy()

  second.get('/api/smart?timeout=1000')
  await once(second.socket, 'data')
  second.socket.end()
  const [answer] = await second.responses
  t.equal(answer?.status, 200, 'an open connection is still served')
  first.socket.destroy()
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'a new connection is accepted once one closed')
})

/**
 * Opens `count` connections at once, one GET each, while the event loop spends 15 ms of every 16 busy: the
 * service then accepts about one connection per busy turn, and the others wait in the kernel's accept queue.
 */
async function connectionStorm (url: string, count: number): Promise<ClientAnswer[]> {
  const stalls = setInterval(() => saturateEventLoop(15), 16)
  try {
    return await Promise.all(Array.from({ length: count }, () => call(url)))
  } finally {
    clearInterval(stalls)
  }
}

t.test('with OVERLOAD_MAX_ACCEPT_WAIT_MS, connections left waiting in the accept queue turn on shedding', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  // Event-loop delay is not looked at here: only the accept queue can turn shedding on.
  const service = await startService({ UPSTREAM_URL: upstream.url, OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', OVERLOAD_MAX_ACCEPT_WAIT_MS: '20' })
  t.teardown(async () => {
    await service.app.close()
    await upstream.close()
  })
  const answers = await connectionStorm(`${service.url}/api/smart?timeout=5000`, 40)
  const shed = answers.filter((answer) => answer.status === 503)
  const served = answers.filter((answer) => answer.status === 200)
  t.equal(shed.length + served.length, 40, 'every answer is a 200 or a 503')
  t.ok(shed.length >= 20, `most connections waited more than 20 ms and were shed (${shed.length} of 40)`)
  t.ok(shed.every((answer) => answer.json?.message === 'The service is overloaded; retry shortly.'))
  t.equal(upstream.requests.length, served.length, 'shed requests never reached the upstream')

  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'back to normal once the queue is empty')
  const { text } = await call(`${service.url}/metrics`)
  t.equal(sample(text, 'smart_requests_total{outcome="overloaded"}'), shed.length)
})

t.test('without OVERLOAD_MAX_ACCEPT_WAIT_MS (the default), the same storm is served', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  const service = await startService({ UPSTREAM_URL: upstream.url, OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0' })
  t.teardown(async () => {
    await service.app.close()
    await upstream.close()
  })
  const answers = await connectionStorm(`${service.url}/api/smart?timeout=5000`, 40)
  t.same(answers.map((answer) => answer.status), new Array(40).fill(200))
})

/**
 * A call whose first attempt answers after 700 ms, made just before a storm of 60 connections that keeps the
 * service shedding for about a second (they are accepted about one per 16 ms): the call's hedge, due at
 * 300 ms, comes due while the service sheds load.
 */
async function slowCallDuringStorm (t: Test, environment: Record<string, string>): Promise<{ upstreamRequestsOfSlowCall: number, metrics: string }> {
  const upstream = await startScriptedUpstream((n) => n === 1
    ? { kind: 'json', body: { time: 700 }, delayMs: 700 }
    : { kind: 'json' })
  const service = await startService({ UPSTREAM_URL: upstream.url, OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0', OVERLOAD_MAX_ACCEPT_WAIT_MS: '20', ...environment })
  t.teardown(async () => {
    await service.app.close()
    await upstream.close()
  })
  const slowCall = call(`${service.url}/api/smart?timeout=3000`)
  await new Promise((resolve) => setTimeout(resolve, 50))
  const [slow, storm] = await Promise.all([slowCall, connectionStorm(`${service.url}/api/smart?timeout=5000`, 60)])
  t.equal(slow.status, 200, 'the slow call got its answer')
  t.ok(storm.some((answer) => answer.status === 503), 'the service was shedding')
  const stormServed = storm.filter((answer) => answer.status === 200).length
  const { text } = await call(`${service.url}/metrics`)
  return { upstreamRequestsOfSlowCall: upstream.requests.length - stormServed, metrics: text }
}

t.test('with OVERLOAD_HOLD_HEDGES, a call in flight does not hedge while the service sheds load', async (t) => {
  const { upstreamRequestsOfSlowCall, metrics } = await slowCallDuringStorm(t, { OVERLOAD_HOLD_HEDGES: 'true' })
  t.equal(upstreamRequestsOfSlowCall, 1, 'the slow call sent no hedge')
  t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="overload"}'), 1)
  t.equal(sample(metrics, 'smart_hedges_total'), 0)
})

t.test('by default the schedule holds while shedding: the call in flight hedges', async (t) => {
  const { upstreamRequestsOfSlowCall, metrics } = await slowCallDuringStorm(t, {})
  t.equal(upstreamRequestsOfSlowCall, 3, 'the slow call sent its two hedges')
  t.equal(sample(metrics, 'smart_hedges_total'), 1)
})
