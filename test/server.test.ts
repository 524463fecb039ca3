import t from 'tap'
import { startScriptedUpstream } from './helpers/scripted-upstream.js'
import { call } from './helpers/service.js'
import { listeningUrl, runServer } from './helpers/server-process.js'

t.test('invalid configuration stops start-up with a message naming the variable', async (t) => {
  const server = runServer({ HEDGE_DELAY_MS: 'soon' })
  t.equal(await server.exited, 1)
  t.match(server.output(), 'Invalid configuration: env/HEDGE_DELAY_MS must be integer')
})

t.test('serves /api/smart, logs one summary line per request, and exits 0 on SIGTERM', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 5 } }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const answer = await call(`${url}/api/smart?timeout=1000`)
  t.same(answer.json, { success: true, response: { time: 5 } })
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
  const lines = server.output().trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)
  const summaries = lines.filter((line) => line.msg === 'smart request')
  t.equal(summaries.length, 1, 'exactly one line for the request')
  t.match(summaries, [{ level: 30, statusCode: 200, outcome: 'success', attempts: 1, winner: 1 }])
  t.match(lines.at(-1), { msg: 'closing', signal: 'SIGTERM' })
})

t.test('an unexpected crash is logged and the server still closes cleanly', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  t.teardown(() => upstream.close())
  // A bug thrown outside any request, as a stray timer would, once the test says so.
  const crash = '--import=data:text/javascript,process.on("message",()=>{throw new Error("injected crash")})'
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info' }, [crash])
  await listeningUrl(t, server)
  server.child.send('crash')
  t.equal(await server.exited, 1)
  t.match(server.output(), /"level":50.*injected crash.*"msg":"closing after an error"/)
})

t.test('SIGTERM with a request in flight: it still gets its 200, new connections are refused, exit 0', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 600 }, delayMs: 600 }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, HEDGE_REQUESTS: '0', LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=5000`)
  while (upstream.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  server.child.kill('SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 100))
  await t.rejects(call(`${url}/ready`), { code: 'ECONNREFUSED' }, 'no new connections once shutdown began')
  const answer = await inFlight
  t.equal(answer.status, 200)
  t.same(answer.json, { success: true, response: { time: 600 } })
  t.equal(await server.exited, 0)
})

t.test('requests still running after SHUTDOWN_GRACE_MS are cut off and the process exits 1', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, SHUTDOWN_GRACE_MS: '300', LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=10000`).catch((error: Error) => error)
  while (upstream.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  const signalledAt = performance.now()
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 1)
  const tookMs = performance.now() - signalledAt
  t.ok(tookMs >= 290 && tookMs < 2000, `exited ${tookMs.toFixed(0)} ms after SIGTERM`)
  t.type(await inFlight, Error, 'the request was cut off')
})

t.test('a second signal ends the process at once', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  const inFlight = call(`${url}/api/smart?timeout=10000`).catch((error: Error) => error)
  while (upstream.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
  server.child.kill('SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 100))
  const secondSignalAt = performance.now()
  server.child.kill('SIGINT')
  t.equal(await server.exited, 1)
  const tookMs = performance.now() - secondSignalAt
  t.ok(tookMs < 1000, `exited ${tookMs.toFixed(0)} ms after the second signal, not at the 30 s grace period`)
  t.type(await inFlight, Error)
})
