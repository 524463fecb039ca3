import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildServer } from '../../app.js'
import { loadConfig } from '../../lib/config.js'
import { call, withService } from '../helpers/service.js'
import { openConnection } from '../helpers/raw-http.js'

t.test('without a drain, requests in flight finish, their answers close their connections, and nothing new is worked on', async (t) => {
  const { service, upstream } = await withService(t, {
    script: () => ({ kind: 'json', body: { time: 400 }, delayMs: 400 }),
    env: { HEDGE_REQUESTS: '0', SHUTDOWN_DRAIN_MS: '0' }
  })
  // Two busy keep-alive connections: idle ones are closed at once when the server stops listening.
  const first = await openConnection(service.url)
  const second = await openConnection(service.url)
  first.get('/ready')
  first.get('/api/smart?timeout=2000')
  second.get('/api/smart?timeout=2000')
  await sleep(100)
  const closed = service.app.close()
  await sleep(50)
  t.ok(service.app.isShuttingDown())
  // Pipelined behind the requests in flight, so they arrive while the server is closing. The answers in flight
  // close their connections, so these would never be delivered: the service refuses them instead of working on them.
  first.get('/ready')
  second.get('/api/smart?timeout=2000')
  await closed

  const [readyBefore, inFlight, ...afterFirst] = await first.responses
  const [otherInFlight, ...afterSecond] = await second.responses
  t.equal(readyBefore?.status, 200, '/ready before shutdown')
  t.equal(inFlight?.status, 200, 'the requests in flight got their answers')
  t.same(JSON.parse(inFlight?.body ?? ''), { success: true, response: { time: 400 } })
  t.equal(otherInFlight?.status, 200)
  t.equal(inFlight?.headers.connection, 'close', 'with `Connection: close`: the client knows not to reuse the connection')
  t.equal(otherInFlight?.headers.connection, 'close')
  t.same([...afterFirst, ...afterSecond], [], 'nothing answered after an answer that closed its connection')
  t.equal(upstream.requests.length, 2, 'the request pipelined while closing never reached the upstream')
})

t.test('draining: /ready turns 503 at once, requests are still served, each answer closes its connection', async (t) => {
  const { service, upstream } = await withService(t, {
    script: () => ({ kind: 'json', body: { time: 200 }, delayMs: 200 }),
    env: { HEDGE_REQUESTS: '0', SHUTDOWN_DRAIN_MS: '600' }
  })
  const keepAlive = await openConnection(service.url)
  keepAlive.get('/api/smart?timeout=2000')
  await sleep(50)
  t.notOk(service.app.isShuttingDown())
  const closeStartedAt = performance.now()
  const closed = service.app.close()

  const ready = await call(`${service.url}/ready`)
  t.equal(ready.status, 503, '/ready turned 503 at once')
  t.equal(ready.headers['retry-after'], '1')
  t.match(ready.json, { success: false, statusCode: 503, error: 'Service Unavailable', message: /shutting down/ })
  const health = await call(`${service.url}/health`)
  t.equal(health.status, 200, 'the process is still alive: liveness stays 200')
  const served = await call(`${service.url}/api/smart?timeout=1000`)
  t.equal(served.status, 200, 'a new request is served while draining')
  t.equal(served.headers.connection, 'close')

  const [inFlight] = await keepAlive.responses
  t.equal(inFlight?.status, 200, 'the request in flight when the drain began got its answer')
  t.equal(inFlight?.headers.connection, 'close', 'with `Connection: close`: the service closed the connection after it')
  await closed
  const closedMs = performance.now() - closeStartedAt
  t.ok(closedMs >= 600, `closed ${Math.round(closedMs)} ms after close began, at the end of the drain`)
  t.equal(upstream.requests.length, 2)
})

t.test('an app that never listened has no drain: it closes at once', async (t) => {
  const app = buildServer(loadConfig({ LOG_LEVEL: 'silent', UPSTREAM_URL: 'http://127.0.0.1:9/', SHUTDOWN_DRAIN_MS: '60000' }))
  t.equal((await app.inject({ url: '/ready' })).statusCode, 200)
  const startedAt = performance.now()
  await app.close()
  t.ok(performance.now() - startedAt < 1000, 'closed without waiting for the drain')
})
