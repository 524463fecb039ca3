import t from 'tap'
import type { UpstreamBehaviour } from '../../helpers/scripted-upstream.js'
import { call, withService } from '../../helpers/service.js'

/** Deadline answers may arrive this much after the deadline: timers, sockets and a shared machine. */
const DEADLINE_MARGIN_MS = 60

const hangs = (): UpstreamBehaviour => ({ kind: 'hang' })

t.test('every attempt tells the upstream the request id, its number and the whole ms left until the deadline', async (t) => {
  const { service, upstream } = await withService(t, { script: (n) => n === 1 ? { kind: 'hang' } : { kind: 'json', delayMs: 50 } })
  const answer = await call(`${service.url}/api/smart?timeout=1000`, { headers: { 'x-request-id': 'trace-1' } })
  t.equal(answer.status, 200)
  const sent = upstream.requests.map(({ headers }) => headers)
  t.same(sent.map((headers) => headers['x-request-id']), ['trace-1', 'trace-1', 'trace-1'])
  t.same(sent.map((headers) => headers['x-attempt']), ['1', '2', '3'])
  const left = sent.map((headers) => Number(headers['x-timeout-ms']))
  t.ok(left.every(Number.isInteger), String(left))
  t.ok((left[0] as number) <= 1000 && (left[0] as number) > 1000 - 50, `attempt 1 left ${left[0]} ms`)
  for (const hedge of left.slice(1)) t.ok(hedge <= 700 && hedge > 700 - 50, `a hedge, sent at 300 ms, left ${hedge} ms`)
})

t.test('a client\'s x-timeout-ms earlier than its timeout is the deadline', async (t) => {
  const { service, upstream } = await withService(t, { script: hangs })
  const answer = await call(`${service.url}/api/smart?timeout=2000`, { headers: { 'x-timeout-ms': '250' } })
  t.equal(answer.status, 408)
  t.match(answer.json, { message: 'No successful upstream answer within the 250 ms timeout.' })
  t.ok(answer.elapsedMs >= 249 && answer.elapsedMs < 250 + DEADLINE_MARGIN_MS, `answered after ${answer.elapsedMs} ms`)
  const left = Number(upstream.requests[0]?.headers['x-timeout-ms'])
  t.ok(left <= 250 && left > 200, `the upstream was told ${left} ms`)
  t.equal(upstream.requests.length, 1, 'the hedge was due at the deadline: never sent')
})

t.test('a timeout earlier than x-timeout-ms is the deadline; x-timeout-ms alone is one', async (t) => {
  const { service } = await withService(t, { script: hangs })
  const earlierTimeout = await call(`${service.url}/api/smart?timeout=150`, { headers: { 'x-timeout-ms': '3000' } })
  t.equal(earlierTimeout.status, 408)
  t.ok(earlierTimeout.elapsedMs < 150 + DEADLINE_MARGIN_MS, `answered after ${earlierTimeout.elapsedMs} ms`)
  const headerOnly = await call(`${service.url}/api/smart`, { headers: { 'x-timeout-ms': '180' } })
  t.equal(headerOnly.status, 408)
  t.match(headerOnly.json, { message: 'No successful upstream answer within the 180 ms timeout.' })
  t.ok(headerOnly.elapsedMs >= 179 && headerOnly.elapsedMs < 180 + DEADLINE_MARGIN_MS, `answered after ${headerOnly.elapsedMs} ms`)
})

t.test('the fan-out endpoints follow x-timeout-ms too, and tell each attempt', async (t) => {
  const { service, upstream } = await withService(t, { script: hangs })
  const all = await call(`${service.url}/api/all?timeout=5000`, { headers: { 'x-timeout-ms': '200' } })
  t.equal(all.status, 408)
  t.ok(all.elapsedMs < 200 + DEADLINE_MARGIN_MS, `answered after ${all.elapsedMs} ms`)
  const within = await call(`${service.url}/api/within-timeout`, { headers: { 'x-timeout-ms': '150' } })
  t.equal(within.text, '{"success":true,"response":[]}')
  t.same(upstream.requests.map(({ headers }) => headers['x-attempt']), ['1', '2', '3', '1', '2', '3'])
})

t.test('400: an invalid x-timeout-ms gets its own message, and no upstream request is made', async (t) => {
  const { service, upstream } = await withService(t, { script: () => ({ kind: 'json' }), env: { MAX_TIMEOUT_MS: '5000' } })
  const cases: Array<[string, string]> = [
    ['abc', 'Header x-timeout-ms has to be integer value.'],
    ['1.5', 'Header x-timeout-ms has to be integer value.'],
    ['1e3', 'Header x-timeout-ms has to be integer value.'],
    ['', 'Header x-timeout-ms has to be integer value.'],
    ['100, 200', 'Header x-timeout-ms has to be integer value.'],
    ['0', 'Header x-timeout-ms has to be positive non zero value.'],
    ['-5', 'Header x-timeout-ms has to be positive non zero value.'],
    ['5001', 'Header x-timeout-ms has to be at most 5000 milliseconds.']
  ]
  for (const endpoint of ['smart', 'first', 'all', 'within-timeout']) {
    for (const [value, message] of cases) {
      const answer = await call(`${service.url}/api/${endpoint}?timeout=1000`, { headers: { 'x-timeout-ms': value } })
      t.equal(answer.status, 400, `${endpoint}: ${JSON.stringify(value)}`)
      t.same(answer.json, { success: false, statusCode: 400, error: 'Bad Request', message })
    }
  }
  const bothBad = await call(`${service.url}/api/smart?timeout=abc`, { headers: { 'x-timeout-ms': 'abc' } })
  t.match(bothBad.json, { message: 'Timeout has to be integer value.' }, 'the query is judged first')
  t.equal(upstream.requests.length, 0)
})
