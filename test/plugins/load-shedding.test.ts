import t from 'tap'
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
