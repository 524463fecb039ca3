import t from 'tap'
import { startScriptedUpstream } from '../helpers/scripted-upstream.js'
import { startService } from '../helpers/service.js'
import { openConnection } from '../helpers/raw-http.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

t.test('while closing, the request in flight finishes and a new one gets a JSON 503 with Retry-After', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 400 }, delayMs: 400 }))
  t.teardown(() => upstream.close())
  const service = await startService({ UPSTREAM_URL: upstream.url, HEDGE_REQUESTS: '0', RETRY_AFTER_SECONDS: '3' })
  // Two busy keep-alive connections: idle ones are closed at once when shutdown begins.
  const first = await openConnection(service.url)
  const second = await openConnection(service.url)
  first.get('/ready')
  first.get('/api/smart?timeout=2000')
  second.get('/api/smart?timeout=2000')
  await sleep(100)
  const closed = service.app.close()
  await sleep(50)
  // Pipelined behind the requests in flight, so they arrive while the server is closing.
  first.get('/ready')
  second.get('/api/smart?timeout=2000')
  await closed

  const [readyBefore, inFlight, readyAfter] = await first.responses
  const [otherInFlight, late] = await second.responses
  t.equal(readyBefore?.status, 200, '/ready before shutdown')
  t.equal(inFlight?.status, 200, 'the requests in flight got their answers')
  t.equal(otherInFlight?.status, 200)
  t.same(JSON.parse(inFlight?.body ?? ''), { success: true, response: { time: 400 } })
  t.equal(readyAfter?.status, 503, '/ready turns 503 once shutdown has begun')
  t.equal(late?.status, 503, 'a request that arrived while closing was refused')
  t.equal(late?.headers['retry-after'], '3')
  t.equal(late?.headers.connection, 'close')
  t.match(JSON.parse(late?.body ?? ''), { success: false, statusCode: 503, error: 'Service Unavailable', message: /shutting down/ })
  t.equal(upstream.requests.length, 2, 'the refused request never reached the upstream')
})
