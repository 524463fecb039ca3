import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from './helpers/eventually.js'
import { startScriptedUpstream } from './helpers/scripted-upstream.js'
import { openConnection, type RawConnection } from './helpers/raw-http.js'
import { call } from './helpers/service.js'
import { listeningUrl, runServer } from './helpers/server-process.js'

t.test('invalid configuration stops start-up with a message naming the variable', async (t) => {
  const server = runServer({ HEDGE_DELAY_MS: 'soon' })
  t.equal(await server.exited, 1)
  t.match(server.output(), 'Invalid configuration: HEDGE_DELAY_MS must be an integer in decimal digits (got "soon")')
})

t.test('serves /api/smart, logs one summary line per request, and exits 0 on SIGTERM after the drain', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 5 } }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: '300' })
  const url = await listeningUrl(t, server)
  const answer = await call(`${url}/api/smart?timeout=1000`)
  t.same(answer.json, { success: true, response: { time: 5 } })
  const signalledAt = performance.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
  const tookMs = performance.now() - signalledAt
  t.ok(tookMs >= 300, `exited ${Math.round(tookMs)} ms after SIGTERM, once the 300 ms drain was over`)
  const lines = server.output().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
  const summaries = lines.filter((line) => line.msg === 'api request')
  t.equal(summaries.length, 1, 'exactly one line for the request')
  t.match(summaries, [{ level: 30, statusCode: 200, outcome: 'success', attempts: 1, winner: 1 }])
  t.match(lines.slice(-3), [
    { msg: 'closing', signal: 'SIGTERM' },
    { msg: /^draining/, drainMs: 300 },
    { msg: /^stopped listening/ }
  ], 'shutdown says what it does, one line per phase')
})

t.test('an unexpected crash is logged and the server still closes cleanly', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  t.teardown(() => upstream.close())
  // A bug thrown outside any request, as a stray timer would, once the test says so.
  const crash = '--import=data:text/javascript,process.on("message",()=>{throw new Error("injected crash")})'
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: '0' }, [crash])
  await listeningUrl(t, server)
  server.child.send('crash')
  t.equal(await server.exited, 1)
  t.match(server.output(), /"level":50.*injected crash.*"msg":"closing after an error"/)
})

t.test('without a drain, SIGTERM with a request in flight: it gets its 200, new connections are refused, exit 0', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 600 }, delayMs: 600 }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, HEDGE_REQUESTS: '0', LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: '0' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=5000`)
  await eventually(() => upstream.requests.length > 0, 5000)
  server.child.kill('SIGTERM')
  await sleep(100)
  await t.rejects(call(`${url}/ready`), { code: 'ECONNREFUSED' }, 'no new connections once shutdown began')
  const answer = await inFlight
  t.equal(answer.status, 200)
  t.same(answer.json, { success: true, response: { time: 600 } })
  t.equal(await server.exited, 0)
})

t.test('requests still running SHUTDOWN_GRACE_MS after the drain are cut off and the process exits 1', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, SHUTDOWN_DRAIN_MS: '400', SHUTDOWN_GRACE_MS: '300', LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=10000`).catch((error: Error) => error)
  await eventually(() => upstream.requests.length > 0, 5000)
  const signalledAt = performance.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 1)
  const tookMs = performance.now() - signalledAt
  t.ok(tookMs >= 690 && tookMs < 2500, `exited ${tookMs.toFixed(0)} ms after SIGTERM: the 400 ms drain, then the 300 ms grace`)
  t.type(await inFlight, Error, 'the request was cut off')
})

t.test('a second signal ends the process at once, in the middle of the drain', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=10000`).catch((error: Error) => error)
  await eventually(() => upstream.requests.length > 0, 5000)
  server.child.kill('SIGTERM')
  await sleep(100)
  const secondSignalAt = performance.now()
  server.child.kill('SIGINT')
  t.equal(await server.exited, 1)
  const tookMs = performance.now() - secondSignalAt
  t.ok(tookMs < 1000, `exited ${tookMs.toFixed(0)} ms after the second signal, not after the 5 s drain and the 30 s grace`)
  t.type(await inFlight, Error)
})

t.test('draining after SIGTERM: a request on an idle keep-alive connection, sent at any moment, gets a full answer', async (t) => {
  const DRAIN_MS = 2000
  const UPSTREAM_MS = 200
  /** Moments after SIGTERM at which an idle connection sends a request: across the drain, the last one in flight at its end. */
  const moments = Array.from({ length: 12 }, (_, i) => i * 150).concat(DRAIN_MS - 100)
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: UPSTREAM_MS }, delayMs: UPSTREAM_MS }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, HEDGE_REQUESTS: '0', LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: String(DRAIN_MS) })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const url = await listeningUrl(t, server)

  // Keep-alive connections as a load balancer's pool holds them: each has served a request and is idle.
  const idle: RawConnection[] = await Promise.all(moments.concat(-1).map(() => openConnection(url)))
  for (const connection of idle) connection.get('/health')
  await eventually(() => idle.every((connection) => connection.received().length > 0), 10_000)
  const [neverUsed] = idle.splice(-1, 1) as [RawConnection]

  const signalledAt = performance.now()
  server.child.kill('SIGTERM')
  const sends = idle.map(async (connection, i) => {
    await sleep((moments[i] ?? 0) - (performance.now() - signalledAt))
    connection.get('/api/smart?timeout=1000')
    return connection.responses
  })
  // Readiness turns at once; new connections are still accepted and served while draining.
  let ready = await call(`${url}/ready`)
  while (ready.status === 200 && performance.now() - signalledAt < 1000) ready = await call(`${url}/ready`)
  const readyTurnedMs = performance.now() - signalledAt
  t.equal(ready.status, 503, `/ready answered 503 ${Math.round(readyTurnedMs)} ms after SIGTERM`)
  t.match(ready.json, { success: false, statusCode: 503, message: /shutting down/ })
  await sleep(DRAIN_MS / 2 - (performance.now() - signalledAt))
  const fresh = await call(`${url}/api/smart?timeout=1000`)
  t.equal(fresh.status, 200, 'a new connection in the middle of the drain is served')
  t.equal(fresh.headers.connection, 'close')

  const answered = await Promise.all(sends)
  const answers = answered.map((responses) => responses[1])
  t.same(idle.flatMap((connection) => connection.errors.map((error) => error.message)), [], 'no connection was reset')
  t.ok(answers.every((answer) => answer?.status === 200 && answer.body === JSON.stringify({ success: true, response: { time: UPSTREAM_MS } })),
    'every request got its full answer', { statuses: answers.map((answer) => answer?.status) })
  t.ok(answers.every((answer) => answer?.headers.connection === 'close'), 'each with `Connection: close`, and the service then closed the connection')
  t.same(answered.map((responses) => responses.length), moments.map(() => 2), 'exactly the two answers on each connection')

  // Then the service stops listening, closes what is left idle, and exits once the last request is answered.
  await neverUsed.responses
  const idleClosedMs = (neverUsed.closedAt() ?? 0) - signalledAt
  t.ok(idleClosedMs >= DRAIN_MS, `a connection idle throughout was closed at the end of the drain (${Math.round(idleClosedMs)} ms)`)
  t.same(neverUsed.errors, [])
  await t.rejects(call(`${url}/ready`), { code: 'ECONNREFUSED' }, 'no new connections after the drain')
  t.equal(await server.exited, 0)
  const exitedMs = performance.now() - signalledAt
  t.ok(exitedMs >= DRAIN_MS + UPSTREAM_MS - 100, `exited ${Math.round(exitedMs)} ms after SIGTERM, once the request in flight at the end of the drain was answered`)
})
