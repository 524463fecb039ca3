import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createUpstreamClient, type AttemptTags } from '../../lib/upstream-client.js'
import { startScriptedUpstream, type UpstreamBehaviour } from '../helpers/scripted-upstream.js'

/** What the service tags each attempt with; the deadline is far off unless a test says otherwise. */
function tags (requestId: string, { attempt = 1, deadlineInMs = 60_000 } = {}): AttemptTags {
  return { requestId, attempt, deadline: performance.now() + deadlineInMs }
}

/** The real got-based client against a scripted loopback upstream, both closed when the test ends. */
async function clientAgainst (t: Test, script: (n: number) => UpstreamBehaviour,
  { maxBodyBytes = 1024, maxSockets = 16 }: { maxBodyBytes?: number, maxSockets?: number } = {}) {
  const upstream = await startScriptedUpstream(script)
  const client = createUpstreamClient(upstream.url, { maxBodyBytes, maxSockets })
  t.teardown(async () => {
    client.close()
    await upstream.close()
  })
  return { client, upstream }
}

/** One attempt against an upstream that behaves the same for every request. */
async function attemptAgainst (t: Test, behaviour: UpstreamBehaviour,
  { timeoutMs = 2000, maxBodyBytes = 1024, abortAfterMs }: { timeoutMs?: number, maxBodyBytes?: number, abortAfterMs?: number } = {}) {
  const { client, upstream } = await clientAgainst(t, () => behaviour, { maxBodyBytes })
  const controller = new AbortController()
  if (abortAfterMs !== undefined) setTimeout(() => controller.abort('lost'), abortAfterMs)
  const outcome = await client.attempt(controller.signal, timeoutMs, tags('test-request-id'))
  return { outcome, upstream }
}

t.test('200 with a JSON body succeeds with the raw text', async (t) => {
  const { outcome } = await attemptAgainst(t, { kind: 'raw', body: '{"time": 10}' })
  t.same(outcome, { ok: true, value: '{"time": 10}' })
})

t.test('each kind of failure is reported with its reason', async (t) => {
  const cases: Array<[string, UpstreamBehaviour, { reason: string, detail: RegExp }]> = [
    ['non-200 status', { kind: 'json', status: 503 }, { reason: 'http_error', detail: /status 503/ }],
    ['invalid JSON', { kind: 'raw', body: 'not json' }, { reason: 'invalid_json', detail: /not JSON/ }],
    ['declared too large', { kind: 'huge', bytes: 5000, declareLength: true }, { reason: 'too_large', detail: /content-length 5000/ }],
    ['streamed too large', { kind: 'huge', bytes: 5000, declareLength: false }, { reason: 'too_large', detail: /over 1024 bytes/ }],
    ['reset', { kind: 'reset' }, { reason: 'connection_error', detail: /ECONNRESET/ }],
    ['reset mid-body', { kind: 'reset', afterHeaders: true }, { reason: 'connection_error', detail: /^ECONNRESET$/ }]
  ]
  for (const [name, behaviour, expected] of cases) {
    const { outcome } = await attemptAgainst(t, behaviour)
    t.match(outcome, { ok: false, ...expected }, name)
  }
})

t.test("the attempt's own timeout is reported as timeout and closes the socket", async (t) => {
  const { outcome, upstream } = await attemptAgainst(t, { kind: 'hang' }, { timeoutMs: 100 })
  t.match(outcome, { ok: false, reason: 'timeout', detail: /Timeout awaiting 'request' for 100ms/ })
  await upstream.allClosed()
  t.equal(upstream.requests[0]?.abandoned, true)
})

t.test('an abort is reported as aborted, with the abort reason, and resets the connection', async (t) => {
  const { outcome, upstream } = await attemptAgainst(t, { kind: 'hang' }, { abortAfterMs: 50 })
  t.same(outcome, { ok: false, reason: 'aborted', detail: 'lost' })
  await upstream.allClosed()
  t.equal(upstream.requests[0]?.abandoned, true)
  t.equal(upstream.requests[0]?.reset, true, 'RST, so no TIME_WAIT socket is left behind')
})

t.test('an attempt given an already aborted signal stops at once', async (t) => {
  const { client } = await clientAgainst(t, () => ({ kind: 'hang' }))
  const outcome = await client.attempt(AbortSignal.abort('cancelled'), 5000, tags('test-request-id'))
  t.same(outcome, { ok: false, reason: 'aborted', detail: 'cancelled' })
})

t.test('an abort before the connection is even open stops the attempt too', async (t) => {
  const { client } = await clientAgainst(t, () => ({ kind: 'hang' }))
  const controller = new AbortController()
  const attempt = client.attempt(controller.signal, 5000, tags('test-request-id'))
  controller.abort('deadline') // got opens its connection asynchronously: there is no socket yet
  t.same(await attempt, { ok: false, reason: 'aborted', detail: 'deadline' })
})

t.test('an abort while the body is streaming also stops the download', async (t) => {
  const { outcome, upstream } = await attemptAgainst(t, { kind: 'drip', intervalMs: 10, bytes: 1000 }, { abortAfterMs: 60 })
  t.match(outcome, { ok: false, reason: 'aborted' })
  await upstream.allClosed()
  const written = upstream.requests[0]?.bytesWritten ?? Infinity
  t.ok(written < 100, `the upstream stopped after ${written} of 1000 bytes`)
})

t.test('a successful attempt leaves its keep-alive socket open for the next one', async (t) => {
  const { client, upstream } = await clientAgainst(t, () => ({ kind: 'json' }))
  const signal = new AbortController().signal
  t.match(await client.attempt(signal, 1000, tags('test-request-id')), { ok: true })
  t.match(await client.attempt(signal, 1000, tags('test-request-id')), { ok: true })
  t.equal(upstream.openSockets(), 1, 'both attempts used one pooled connection')
  client.close()
  await sleep(20)
  t.equal(upstream.openSockets(), 0, 'close() releases the pool')
})

t.test('beyond maxSockets, attempts wait for a free connection instead of opening more', async (t) => {
  // Attempts 1 and 2 hang; whatever comes after answers at once.
  const { client, upstream } = await clientAgainst(t, (n) => n <= 2 ? { kind: 'hang' } : { kind: 'json', body: { n } }, { maxSockets: 2 })
  const first = new AbortController()
  const second = new AbortController()
  const attempts = [
    client.attempt(first.signal, 5000, tags('one')),
    client.attempt(second.signal, 5000, tags('two')),
    client.attempt(new AbortController().signal, 5000, tags('three'))
  ]
  await sleep(100)
  t.equal(upstream.requests.length, 2, 'the third attempt waits: only two requests reached the upstream')
  t.equal(upstream.openSockets(), 2)

  first.abort('lost')
  t.same(await attempts[0], { ok: false, reason: 'aborted', detail: 'lost' })
  t.same(await attempts[2], { ok: true, value: '{"n":3}' }, 'the waiting attempt got the freed slot')
  t.match(upstream.requests.map((request) => request.headers['x-request-id']), ['one', 'two', 'three'])
  second.abort('deadline')
  t.same(await attempts[1], { ok: false, reason: 'aborted', detail: 'deadline' })
})

t.test('an attempt aborted while it waits for a connection never reaches the upstream', async (t) => {
  const { client, upstream } = await clientAgainst(t, () => ({ kind: 'hang' }), { maxSockets: 1 })
  const holder = new AbortController()
  const holding = client.attempt(holder.signal, 5000, tags('holder'))
  const waiter = new AbortController()
  const waiting = client.attempt(waiter.signal, 5000, tags('waiter'))
  await sleep(50)
  waiter.abort('deadline')
  t.same(await waiting, { ok: false, reason: 'aborted', detail: 'deadline' })
  holder.abort('deadline')
  await holding
  await sleep(50)
  t.equal(upstream.requests.length, 1, 'only the attempt that held the connection was sent')
})

t.test("an attempt's time limit covers its wait for a connection", async (t) => {
  const { client, upstream } = await clientAgainst(t, () => ({ kind: 'hang' }), { maxSockets: 1 })
  const holder = new AbortController()
  const holding = client.attempt(holder.signal, 5000, tags('holder'))
  const begin = performance.now()
  const outcome = await client.attempt(new AbortController().signal, 80, tags('waiter'))
  const took = performance.now() - begin
  t.same(outcome, { ok: false, reason: 'timeout', detail: 'no upstream connection free within 80 ms' })
  t.ok(took >= 79 && took < 80 + 50, `timed out while waiting (${took.toFixed(1)} ms)`)
  holder.abort('deadline')
  await holding
  t.equal(upstream.requests.length, 1)
})

t.test('a waiting attempt that gets its connection late has only the rest of its time limit', async (t) => {
  const { client, upstream } = await clientAgainst(t, () => ({ kind: 'hang' }), { maxSockets: 1 })
  const holder = new AbortController()
  const holding = client.attempt(holder.signal, 5000, tags('holder'))
  setTimeout(() => holder.abort('lost'), 60)
  const begin = performance.now()
  const outcome = await client.attempt(new AbortController().signal, 150, tags('waiter'))
  const took = performance.now() - begin
  t.match(outcome, { ok: false, reason: 'timeout', detail: /Timeout awaiting 'request' for \d+(\.\d+)?ms/ })
  t.ok(took >= 149 && took < 150 + 50, `the limit counted from the first call (${took.toFixed(1)} ms)`)
  await holding
  t.equal(upstream.requests.length, 2)
})

t.test('a freed connection goes to the newest waiting attempt, which has the most time left', async (t) => {
  const { client, upstream } = await clientAgainst(t, (n) => n === 1 ? { kind: 'hang' } : { kind: 'json', body: { n } }, { maxSockets: 1 })
  const holder = new AbortController()
  const holding = client.attempt(holder.signal, 5000, tags('holder'))
  await sleep(50) // the holder reached the upstream
  const signal = new AbortController().signal
  const older = client.attempt(signal, 5000, tags('older'))
  const middle = new AbortController()
  const leaving = client.attempt(middle.signal, 5000, tags('middle'))
  const newer = client.attempt(signal, 5000, tags('newer'))
  middle.abort('cancelled') // leaves the line from its middle
  t.same(await leaving, { ok: false, reason: 'aborted', detail: 'cancelled' })
  holder.abort('lost')
  await holding
  t.same(await newer, { ok: true, value: '{"n":2}' }, 'the newest went first')
  t.same(await older, { ok: true, value: '{"n":3}' }, 'then the older one')
  t.same(upstream.requests.map((request) => request.headers['x-request-id']), ['holder', 'newer', 'older'])
})

t.test('an https upstream is called through node:https', async (t) => {
  // Nothing listens on port 1: the attempt gets as far as connecting, which only node:https does for https.
  const client = createUpstreamClient('https://127.0.0.1:1/work', { maxBodyBytes: 1024, maxSockets: 1 })
  t.teardown(() => client.close())
  t.same(await client.attempt(new AbortController().signal, 1000, tags('tls')), { ok: false, reason: 'connection_error', detail: 'ECONNREFUSED' })
})

t.test('every attempt tells the upstream its request id, its number and the whole ms left until the deadline', async (t) => {
  const { client, upstream } = await clientAgainst(t, () => ({ kind: 'json' }))
  t.match(await client.attempt(new AbortController().signal, 5000, tags('req-1', { attempt: 3, deadlineInMs: 800.9 })), { ok: true })
  const { headers } = upstream.requests[0] as { headers: Record<string, string> }
  t.equal(headers['x-request-id'], 'req-1')
  t.equal(headers['x-attempt'], '3')
  const left = Number(headers['x-timeout-ms'])
  t.ok(Number.isInteger(left) && left <= 800 && left > 800 - 50, `x-timeout-ms ${headers['x-timeout-ms']}`)
})

t.test('x-timeout-ms is counted when the attempt leaves, after its wait for a connection; never below 0', async (t) => {
  const { client, upstream } = await clientAgainst(t, (n) => n === 1 ? { kind: 'hang' } : { kind: 'json' }, { maxSockets: 1 })
  const holder = new AbortController()
  const holding = client.attempt(holder.signal, 5000, tags('holder'))
  setTimeout(() => holder.abort('lost'), 300)
  t.match(await client.attempt(new AbortController().signal, 5000, tags('waiter', { deadlineInMs: 1000 })), { ok: true })
  await holding
  const waited = Number(upstream.requests[1]?.headers['x-timeout-ms'])
  t.ok(waited <= 700 && waited > 700 - 60, `x-timeout-ms ${waited} after a 300 ms wait`)
  t.match(await client.attempt(new AbortController().signal, 5000, tags('late', { deadlineInMs: -5 })), { ok: true })
  t.equal(upstream.requests[2]?.headers['x-timeout-ms'], '0', 'a deadline already past is sent as 0')
})

t.test('429 and 503 with Retry-After are failed attempts that carry the pushback; other failures carry none', async (t) => {
  const answers: UpstreamBehaviour[] = [
    { kind: 'json', status: 503, headers: { 'retry-after': '2' } },
    { kind: 'json', status: 429, headers: { 'retry-after': 'Wed, 02 Dec 2026 12:00:05 GMT' } },
    { kind: 'json', status: 503 },
    { kind: 'json', status: 500, headers: { 'retry-after': '2' } }
  ]
  const { client } = await clientAgainst(t, (n) => answers[n - 1] as UpstreamBehaviour)
  const outcomes = []
  for (let i = 0; i < answers.length; i++) outcomes.push(await client.attempt(new AbortController().signal, 5000, tags(`r${i}`)))
  t.same(outcomes, [
    { ok: false, reason: 'http_error', detail: 'status 503, Retry-After 2', pushback: { statusCode: 503, retryAfter: '2' } },
    {
      ok: false,
      reason: 'http_error',
      detail: 'status 429, Retry-After Wed, 02 Dec 2026 12:00:05 GMT',
      pushback: { statusCode: 429, retryAfter: 'Wed, 02 Dec 2026 12:00:05 GMT' }
    },
    { ok: false, reason: 'http_error', detail: 'status 503' },
    { ok: false, reason: 'http_error', detail: 'status 500' }
  ])
})
