import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from '../../helpers/eventually.js'
import { sample } from '../../helpers/prometheus.js'
import { openConnection } from '../../helpers/raw-http.js'
import { startScriptedUpstream, type UpstreamBehaviour, type ScriptedUpstream } from '../../helpers/scripted-upstream.js'
import { call, withService, type RunningService } from '../../helpers/service.js'
import { startSilentUpstream } from '../../helpers/silent-upstream.js'

/** Deadline answers may arrive this much after the timeout: timers, sockets and a shared machine. */
const DEADLINE_MARGIN_MS = 60

/**
 * Times taken at the upstream include each attempt's trip to it (a new connection, scheduling), so a gap
 * between two arrivals can look this much shorter than the gap between the two starts in the service.
 */
const ARRIVAL_JITTER_MS = 5

interface Setup {
  upstream: ScriptedUpstream
  service: RunningService
  smart (query?: string): ReturnType<typeof call>
}

async function setup (t: Test, script: (n: number) => UpstreamBehaviour,
  environment: Record<string, string> = {}): Promise<Setup> {
  const { upstream, service } = await withService(t, { script, env: environment })
  return { upstream, service, smart: (query = '') => call(`${service.url}/api/smart${query}`) }
}

function assertErrorBody (t: Test, answer: Awaited<ReturnType<typeof call>>, statusCode: number, message?: string | RegExp) {
  t.equal(answer.status, statusCode, `status ${statusCode}`)
  t.match(answer.headers['content-type'], /^application\/json/)
  t.match(answer.json, { success: false, statusCode, error: String, message: message ?? String })
}

t.test('200: the first success is returned with the upstream JSON unchanged', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'raw', body: '{"time": 123, "nested":[1,2.50]}' }))
  const answer = await smart('?timeout=1000')
  t.equal(answer.status, 200)
  t.match(answer.headers['content-type'], /^application\/json/)
  t.equal(answer.text, '{"success":true,"response":{"time": 123, "nested":[1,2.50]}}', 'byte for byte')
  t.equal(upstream.requests.length, 1, 'a quick success needs no hedge')
})

t.test('400: every invalid timeout is rejected before any upstream request', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'json' }), { MAX_TIMEOUT_MS: '5000' })
  const notInteger = 'Timeout has to be integer value.'
  const notPositive = 'Timeout has to be positive non zero value.'
  const cases: Array<[string, string]> = [
    ['timeout=1.5', notInteger],
    ['timeout=1e3', notInteger],
    ['timeout=0x10', notInteger],
    ['timeout=%2010', notInteger], // " 10"
    ['timeout=10%20', notInteger], // "10 "
    ['timeout=10abc', notInteger],
    ['timeout=abc', notInteger],
    ['timeout=', notInteger],
    ['timeout', notInteger],
    ['timeout=%D9%A1%D9%A2', notInteger], // Arabic-Indic digits
    ['timeout=+5', notInteger],
    ['timeout=-abc', notInteger],
    ['timeout=-5', notPositive],
    ['timeout=-0', notPositive],
    ['timeout=0', notPositive],
    ['timeout=000', notPositive],
    ['timeout=5001', 'Timeout has to be at most 5000 milliseconds.'],
    ['timeout=99999999999999999999999999', 'Timeout has to be at most 5000 milliseconds.'],
    ['timeout=1&timeout=2', 'Timeout has to be given only once.']
  ]
  for (const [query, message] of cases) {
    const answer = await smart(`?${query}`)
    assertErrorBody(t, answer, 400, message)
  }
  t.equal(upstream.requests.length, 0, 'no upstream request for any of them')
})

t.test('valid edge values are accepted: leading zeros and exactly MAX_TIMEOUT_MS', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'json' }), { MAX_TIMEOUT_MS: '5000' })
  t.equal((await smart('?timeout=0005000')).status, 200)
  t.equal((await smart('?timeout=5000')).status, 200)
  t.equal((await smart('?timeout=1000&other=ignored')).status, 200)
  t.equal(upstream.requests.length, 3)
})

t.test('408: the deadline holds when the upstream never answers, and every attempt is closed', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'hang' }))
  const answer = await smart('?timeout=500')
  assertErrorBody(t, answer, 408, 'No successful upstream answer within the 500 ms timeout.')
  t.ok(answer.elapsedMs >= 495 && answer.elapsedMs <= 500 + DEADLINE_MARGIN_MS,
    `answered at ${answer.elapsedMs.toFixed(1)} ms`)
  t.equal(upstream.requests.length, 3, 'the hedges fired before the deadline')
  await upstream.allClosed()
  const firstArrival = upstream.requests[0]?.arrivedAt ?? 0
  for (const request of upstream.requests) {
    t.ok(request.abandoned, `attempt ${request.n} was aborted`)
    const closedAfter = (request.closedAt ?? Infinity) - firstArrival
    t.ok(closedAfter <= 500 + DEADLINE_MARGIN_MS, `attempt ${request.n} closed ${closedAfter.toFixed(1)} ms after attempt 1 arrived`)
  }
})

t.test('408: the deadline counts from the arrival of the request, not from the start of the handler', async (t) => {
  const { service } = await withService(t, {
    script: () => ({ kind: 'hang' }),
    // A slow hook before the handler, as a busy auth or rate-limit step would be.
    beforeListen: (app) => { app.addHook('onRequest', async () => { await sleep(200) }) }
  })
  const answer = await call(`${service.url}/api/smart?timeout=500`)
  assertErrorBody(t, answer, 408)
  t.ok(answer.elapsedMs <= 500 + DEADLINE_MARGIN_MS, `answered at ${answer.elapsedMs.toFixed(1)} ms, not 700`)
})

t.test('408: a timeout shorter than the hedge delay never hedges', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'hang' }))
  const answer = await smart('?timeout=100')
  assertErrorBody(t, answer, 408)
  t.ok(answer.elapsedMs <= 100 + DEADLINE_MARGIN_MS, `answered at ${answer.elapsedMs.toFixed(1)} ms`)
  t.equal(upstream.requests.length, 1)
})

t.test('hedges reach the upstream at ~300 ms and together, and the losers are closed', async (t) => {
  const { smart, upstream } = await setup(t, (n) => n === 2
    ? { kind: 'json', body: { time: 42 }, delayMs: 50 }
    : { kind: 'hang' })
  const answer = await smart('?timeout=2000')
  t.equal(answer.status, 200)
  t.same(answer.json, { success: true, response: { time: 42 } })
  const [first, second, third] = upstream.requests
  t.equal(upstream.requests.length, 3)
  const hedgeAt = (second?.arrivedAt ?? 0) - (first?.arrivedAt ?? 0)
  t.ok(hedgeAt >= 300 - ARRIVAL_JITTER_MS && hedgeAt <= 300 + 50, `hedges arrived ${hedgeAt.toFixed(1)} ms after attempt 1`)
  t.ok(Math.abs((second?.arrivedAt ?? 0) - (third?.arrivedAt ?? 1000)) <= 10, 'the two hedges arrived together')
  t.ok(answer.elapsedMs <= 300 + 50 + 100, `answered at ${answer.elapsedMs.toFixed(1)} ms`)
  await upstream.allClosed()
  t.ok(first?.abandoned, 'attempt 1 (loser) was closed')
  t.ok(third?.abandoned, 'attempt 3 (loser) was closed')
  t.notOk(second?.abandoned, 'the winner finished normally')
  t.match(answer.headers['server-timing'],
    /^total;dur=[\d.]+, attempt1;dur=[\d.]+;desc="aborted", attempt2;dur=[\d.]+;desc="200", attempt3;dur=[\d.]+;desc="aborted"$/,
    'Server-Timing draws the hedge timeline')
  const answeredAt = (second?.closedAt ?? 0)
  t.ok((first?.closedAt ?? Infinity) - answeredAt <= 50, 'loser 1 closed right after the win')
  t.ok((third?.closedAt ?? Infinity) - answeredAt <= 50, 'loser 3 closed right after the win')
})

t.test('a first attempt that fails fast hedges at once instead of waiting 300 ms', async (t) => {
  const { smart, upstream } = await setup(t, (n) => n === 1
    ? { kind: 'json', status: 500, body: { error: 'boom' } }
    : { kind: 'json', body: { time: 7 }, delayMs: 20 })
  const answer = await smart('?timeout=2000')
  t.equal(answer.status, 200)
  t.ok(answer.elapsedMs < 200, `answered at ${answer.elapsedMs.toFixed(1)} ms, well before the hedge delay`)
  t.equal(upstream.requests.length, 3)
})

t.test('502: every attempt failed before the deadline', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'json', status: 500, body: { error: 'boom' } }))
  const answer = await smart('?timeout=5000')
  assertErrorBody(t, answer, 502, /Every upstream attempt failed: status 500; status 500; status 500/)
  t.ok(answer.elapsedMs < 300, 'no waiting for the hedge timer or the deadline')
  t.equal(upstream.requests.length, 3, 'never more than 1 + HEDGE_REQUESTS attempts')
})

t.test('without timeout: waits for the first success past the hedge delay', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'json', body: { time: 700 }, delayMs: 700 }))
  const answer = await smart()
  t.equal(answer.status, 200)
  t.equal(upstream.requests.length, 3, 'the hedges fired while it waited')
  t.ok(answer.elapsedMs >= 700 && answer.elapsedMs <= 700 + DEADLINE_MARGIN_MS, `answered with attempt 1, at ${answer.elapsedMs.toFixed(1)} ms`)
})

t.test('without timeout: bounded by MAX_TIMEOUT_MS, so nothing hangs forever', async (t) => {
  const { smart } = await setup(t, () => ({ kind: 'hang' }), { MAX_TIMEOUT_MS: '400' })
  const answer = await smart()
  assertErrorBody(t, answer, 408, 'No successful upstream answer within the 400 ms timeout.')
  t.ok(answer.elapsedMs <= 400 + DEADLINE_MARGIN_MS, `answered at ${answer.elapsedMs.toFixed(1)} ms`)
})

t.test('HEDGE_REQUESTS=0 and HEDGE_DELAY_MS are honoured', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'hang' }), { HEDGE_REQUESTS: '0' })
  assertErrorBody(t, await smart('?timeout=400'), 408)
  t.equal(upstream.requests.length, 1)

  const other = await setup(t, () => ({ kind: 'hang' }), { HEDGE_DELAY_MS: '100', HEDGE_REQUESTS: '1', LOG_LEVEL: 'debug' })
  assertErrorBody(t, await other.smart('?timeout=300'), 408)
  t.equal(other.upstream.requests.length, 2)
  // The service's own record of when it started the hedge: arrival times at the upstream would add the
  // jitter of two connection set-ups on a busy machine. Node's timers may fire up to a millisecond early.
  const hedge = other.service.logs.find((line) => line.msg === 'upstream attempt' && line.attempt === 2)
  const startedAtMs = Number(hedge?.startedAtMs)
  t.ok(startedAtMs >= 99 && startedAtMs <= 150, `hedge started ${startedAtMs} ms after attempt 1`)
})

t.test('a 200 whose body is not JSON is a failed attempt', async (t) => {
  const { smart } = await setup(t, (n) => n === 1
    ? { kind: 'raw', body: 'Internal hiccup <html>' }
    : { kind: 'json', body: { time: 2 } })
  const answer = await smart('?timeout=1000')
  t.same(answer.json, { success: true, response: { time: 2 } })
})

t.test('a JSON body with another content type still counts: the body decides', async (t) => {
  const { smart } = await setup(t, () => ({ kind: 'raw', body: '{"time":5}', contentType: 'text/plain' }))
  t.same((await smart('?timeout=1000')).json, { success: true, response: { time: 5 } })
})

t.test('a 64 MiB body is refused without being buffered', async (t) => {
  for (const declareLength of [true, false]) {
    const { smart, upstream } = await setup(t, () => ({ kind: 'huge', bytes: 64 * 1024 * 1024, declareLength }))
    const answer = await smart('?timeout=10000')
    assertErrorBody(t, answer, 502, declareLength ? /content-length 67108864/ : /over 1048576 bytes/)
    await upstream.allClosed()
    for (const request of upstream.requests) {
      t.ok(request.abandoned, 'the service hung up')
      t.ok(request.bytesWritten < 16 * 1024 * 1024, `stopped after ${request.bytesWritten} bytes were written`)
    }
  }
})

t.test('MAX_BODY_BYTES is the limit: a body one byte over fails, one at the limit passes', async (t) => {
  const body = JSON.stringify({ pad: 'x'.repeat(100) })
  const atLimit = await setup(t, () => ({ kind: 'raw', body }), { MAX_BODY_BYTES: String(body.length) })
  t.equal((await atLimit.smart('?timeout=1000')).status, 200)
  const over = await setup(t, () => ({ kind: 'raw', body }), { MAX_BODY_BYTES: String(body.length - 1) })
  t.equal((await over.smart('?timeout=1000')).status, 502)
})

t.test('a connection reset, before or after the headers, is a failed attempt', async (t) => {
  for (const afterHeaders of [false, true]) {
    const { smart, upstream } = await setup(t, () => ({ kind: 'reset', afterHeaders }))
    const answer = await smart('?timeout=2000')
    assertErrorBody(t, answer, 502)
    t.equal(upstream.requests.length, 3)
  }
})

t.test('a refused port is a 502 at once, not a 500 or a wait', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  const url = upstream.url
  await upstream.close()
  const { service } = await withService(t, { env: { UPSTREAM_URL: url } })
  const answer = await call(`${service.url}/api/smart?timeout=2000`)
  assertErrorBody(t, answer, 502, /ECONNREFUSED/)
  t.ok(answer.elapsedMs < 250)
})

t.test('a body that drips past the deadline is cut off at the deadline', async (t) => {
  const { smart, upstream } = await setup(t, () => ({ kind: 'drip', intervalMs: 20, bytes: 1000 }))
  const answer = await smart('?timeout=400')
  assertErrorBody(t, answer, 408)
  t.ok(answer.elapsedMs <= 400 + DEADLINE_MARGIN_MS, `answered at ${answer.elapsedMs.toFixed(1)} ms`)
  await upstream.allClosed()
  t.ok(upstream.requests.every((r) => r.abandoned))
})

t.test('redirects are followed on the upstream origin only', async (t) => {
  const { smart, upstream } = await setup(t, (n) => n === 1
    ? { kind: 'redirect', location: '/elsewhere' }
    : { kind: 'json', body: { time: 9 } })
  t.same((await smart('?timeout=1000')).json, { success: true, response: { time: 9 } })
  t.equal(upstream.requests.length, 2)
  t.equal(upstream.requests[1]?.url, '/elsewhere', 'the second request went to the Location')

  const offsite = await setup(t, () => ({ kind: 'redirect', location: 'http://example.invalid/' }))
  assertErrorBody(t, await offsite.smart('?timeout=1000'), 502, /status 302/)
})

t.test('a client that hangs up aborts every attempt on the upstream', async (t) => {
  const { service, upstream } = await setup(t, () => ({ kind: 'hang' }))
  const client = await openConnection(service.url)
  client.get('/api/smart?timeout=5000')
  await eventually(() => upstream.requests.length >= 3, 5000)
  const hungUpAt = upstream.now()
  client.socket.destroy()
  await upstream.allClosed()
  for (const request of upstream.requests) {
    const after = (request.closedAt ?? Infinity) - hungUpAt
    t.ok(after <= 50, `attempt ${request.n} closed ${after.toFixed(1)} ms after the hang-up`)
  }
})

t.test('a client that hangs up is logged and counted as client_closed, never as a success', async (t) => {
  const { service, upstream } = await setup(t, () => ({ kind: 'hang' }), { LOG_LEVEL: 'info' })
  const client = await openConnection(service.url)
  client.get('/api/smart?timeout=5000')
  await eventually(() => upstream.requests.length >= 1, 5000)
  client.socket.destroy()
  await upstream.allClosed()
  await sleep(50)
  const summaries = service.logs.filter((line) => line.msg === 'api request')
  t.equal(summaries.length, 1, 'one summary line')
  t.match(summaries, [{ outcome: 'client_closed', statusCode: 499, attempts: 1 }])
  const metrics = await call(`${service.url}/metrics`)
  t.equal(sample(metrics.text, 'smart_requests_total{endpoint="smart",outcome="client_closed"}'), 1)
  t.notMatch(metrics.text, /smart_requests_total\{outcome="success"\}/)
})

t.test('one info line per request, with each attempt at debug', async (t) => {
  const { smart, service } = await setup(t, (n) => n === 1 ? { kind: 'json', status: 503 } : { kind: 'json', body: { time: 3 } },
    { LOG_LEVEL: 'debug' })
  t.equal((await smart('?timeout=1000')).status, 200)
  t.equal((await smart('?timeout=0')).status, 400)
  const lines = service.logs.filter((line) => line.reqId !== undefined)
  const summaries = lines.filter((line) => line.msg === 'api request')
  t.equal(summaries.length, 2, 'one summary line per request')
  t.match(summaries, [
    { level: 30, outcome: 'success', statusCode: 200, timeoutMs: 1000, attempts: 3, winner: Number, responseTimeMs: Number },
    { level: 30, outcome: 'invalid', statusCode: 400, attempts: 0 }
  ])
  t.match(lines.filter((line) => line.msg === 'upstream attempt'), [
    { level: 20, attempt: 1, result: 'http_error', detail: 'status 503', startedAtMs: Number, durationMs: Number },
    { level: 20, attempt: 2 },
    { level: 20, attempt: 3 }
  ])

  const quiet = await setup(t, () => ({ kind: 'json' }), { LOG_LEVEL: 'info' })
  t.equal((await quiet.smart('?timeout=1000')).status, 200)
  t.equal((await call(`${quiet.service.url}/health`)).status, 200)
  t.same(quiet.service.logs.filter((line) => line.reqId !== undefined).map((line) => line.msg), ['api request'],
    'at info a healthy request logs one line, and probes none')
})

t.test('a client that hangs up before the hedge also stops the hedges from firing', async (t) => {
  const { service, upstream } = await setup(t, () => ({ kind: 'hang' }))
  const client = await openConnection(service.url)
  client.get('/api/smart')
  await eventually(() => upstream.requests.length >= 1, 5000)
  client.socket.destroy()
  await upstream.allClosed()
  await sleep(400)
  t.equal(upstream.requests.length, 1, 'no hedge after the client left')
})

t.test('unknown routes answer JSON 404, other methods on /api/smart JSON 405', async (t) => {
  const { service } = await setup(t, () => ({ kind: 'json' }))
  assertErrorBody(t, await call(`${service.url}/nope`), 404, 'Route GET:/nope not found')
  const answer = await call(`${service.url}/api/smart`, { method: 'POST' })
  assertErrorBody(t, answer, 405, 'POST is not supported on /api/smart; use GET.')
  t.equal(answer.headers.allow, 'GET, HEAD')
})

t.test('an unexpected bug answers a JSON 500 that reveals nothing', async (t) => {
  const { service } = await withService(t, {
    env: { UPSTREAM_URL: 'http://127.0.0.1:9/' },
    beforeListen: (app) => {
      app.get('/bug', async () => { throw new Error('secret internal detail') })
      app.get('/odd-status', async () => { throw Object.assign(new Error('odd'), { statusCode: 302 }) })
      app.get('/unnamed-status', async () => { throw Object.assign(new Error('enhance your calm'), { statusCode: 420 }) })
    }
  })
  const answer = await call(`${service.url}/bug`)
  assertErrorBody(t, answer, 500, 'Internal Server Error')
  t.notMatch(answer.text, /secret/)
  assertErrorBody(t, await call(`${service.url}/odd-status`), 500, 'Internal Server Error')
  const unnamed = await call(`${service.url}/unnamed-status`)
  assertErrorBody(t, unnamed, 420, 'enhance your calm')
  t.equal(unnamed.json?.error, 'Error', 'a status without a standard name')
})

t.test('with every upstream connection taken, the service holds its cap and still answers 408 on time', async (t) => {
  // Hedges at once: 10 requests want 30 upstream connections together, and may have 3.
  const { service, upstream } = await withService(t, {
    upstream: await startSilentUpstream(),
    env: { UPSTREAM_MAX_SOCKETS: '3', HEDGE_DELAY_MS: '0' }
  })
  const answers = Promise.all(Array.from({ length: 10 }, () => call(`${service.url}/api/smart?timeout=300`)))
  await sleep(150)
  t.equal(upstream.connections(), 3, 'three connections, no more, while the requests wait')
  for (const answer of await answers) {
    assertErrorBody(t, answer, 408)
    t.ok(answer.elapsedMs < 300 + DEADLINE_MARGIN_MS, `answered at the deadline (${answer.elapsedMs.toFixed(0)} ms)`)
  }
  const metrics = (await call(`${service.url}/metrics`)).text
  t.equal(sample(metrics, 'smart_requests_total{endpoint="smart",outcome="timeout"}'), 10)
  t.equal(sample(metrics, 'smart_upstream_attempts_total{endpoint="smart",result="aborted"}'), 30, 'waiting attempts count as aborted too')
  await sleep(50)
  t.equal(upstream.openSockets(), 0, 'every connection was released')
  // The service goes on serving.
  assertErrorBody(t, await call(`${service.url}/api/smart?timeout=100`), 408)
})
