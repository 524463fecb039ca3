import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { openConnection } from '../helpers/raw-http.js'
import { startScriptedUpstream } from '../helpers/scripted-upstream.js'
import { call, startService } from '../helpers/service.js'
import { sample } from '../helpers/prometheus.js'

/** Keeps this process's event loop busy, as a flood of requests would. */
function saturateEventLoop (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
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
