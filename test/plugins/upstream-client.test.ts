import t, { type Test } from 'tap'
import { createUpstreamClient } from '../../plugins/upstream-client.js'
import { startScriptedUpstream, type UpstreamBehaviour } from '../helpers/scripted-upstream.js'

/** One attempt of the real got-based client against a scripted loopback upstream. */
async function attemptAgainst (t: Test, behaviour: UpstreamBehaviour,
  { timeoutMs = 2000, maxBodyBytes = 1024, abortAfterMs }: { timeoutMs?: number, maxBodyBytes?: number, abortAfterMs?: number } = {}) {
  const upstream = await startScriptedUpstream(() => behaviour)
  const client = createUpstreamClient(upstream.url, maxBodyBytes)
  t.teardown(async () => {
    client.close()
    await upstream.close()
  })
  const controller = new AbortController()
  if (abortAfterMs !== undefined) setTimeout(() => controller.abort('lost'), abortAfterMs)
  const outcome = await client.attempt(controller.signal, timeoutMs, 'test-request-id')
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
    ['reset mid-body', { kind: 'reset', afterHeaders: true }, { reason: 'connection_error', detail: /ECONNRESET|ERR_/ }]
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
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  const client = createUpstreamClient(upstream.url, 1024)
  t.teardown(async () => {
    client.close()
    await upstream.close()
  })
  const outcome = await client.attempt(AbortSignal.abort('cancelled'), 5000, 'test-request-id')
  t.same(outcome, { ok: false, reason: 'aborted', detail: 'cancelled' })
})

t.test('an abort before the connection is even open stops the attempt too', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
  const client = createUpstreamClient(upstream.url, 1024)
  t.teardown(async () => {
    client.close()
    await upstream.close()
  })
  const controller = new AbortController()
  const attempt = client.attempt(controller.signal, 5000, 'test-request-id')
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
  const upstream = await startScriptedUpstream(() => ({ kind: 'json' }))
  const client = createUpstreamClient(upstream.url, 1024)
  t.teardown(async () => {
    client.close()
    await upstream.close()
  })
  const signal = new AbortController().signal
  t.match(await client.attempt(signal, 1000, 'test-request-id'), { ok: true })
  t.match(await client.attempt(signal, 1000, 'test-request-id'), { ok: true })
  t.equal(upstream.openSockets(), 1, 'both attempts used one pooled connection')
  client.close()
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(upstream.openSockets(), 0, 'close() releases the pool')
})
