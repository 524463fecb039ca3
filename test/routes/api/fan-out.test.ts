/**
 * /api/first, /api/all and /api/within-timeout (SPEC §2): FANOUT_REQUESTS attempts at once, and each endpoint's
 * answer, on real sockets against a scripted upstream. What they share with /api/smart (the 400s, the deadline, the
 * client hanging up) is checked here for each of them too.
 */
import t, { type Test } from 'tap'
import { eventually } from '../../helpers/eventually.js'
import { sample } from '../../helpers/prometheus.js'
import { openConnection } from '../../helpers/raw-http.js'
import type { ScriptedUpstream, UpstreamBehaviour } from '../../helpers/scripted-upstream.js'
import { call, withService, type ClientAnswer, type RunningService } from '../../helpers/service.js'

/** Deadline answers may arrive this much after the timeout: timers, sockets and a shared machine. */
const DEADLINE_MARGIN_MS = 60
/** An aborted attempt's connection is closed this soon after the answer went out. */
const ABORT_MARGIN_MS = 50

const FAN_OUT_ENDPOINTS = ['first', 'all', 'within-timeout'] as const
type FanOutEndpoint = typeof FAN_OUT_ENDPOINTS[number]

interface Setup {
  upstream: ScriptedUpstream
  service: RunningService
  get (endpoint: FanOutEndpoint, query?: string): Promise<ClientAnswer>
}

async function setup (t: Test, script: (n: number) => UpstreamBehaviour, environment: Record<string, string> = {}): Promise<Setup> {
  const { upstream, service } = await withService(t, { script, env: { LOG_LEVEL: 'info', ...environment } })
  return { upstream, service, get: (endpoint, query = '') => call(`${service.url}/api/${endpoint}${query}`) }
}

const json = (time: number, delayMs = time): UpstreamBehaviour => ({ kind: 'json', body: { time }, delayMs })
const failing = (delayMs: number): UpstreamBehaviour => ({ kind: 'json', status: 500, delayMs })

/** Attempts reach the upstream in no set order: answers are scripted by the order they arrive in. */
function byArrival (...behaviours: UpstreamBehaviour[]): (n: number) => UpstreamBehaviour {
  return (n) => behaviours[n - 1] ?? { kind: 'hang' }
}

async function assertAllAbortedBy (t: Test, upstream: ScriptedUpstream, answeredAt: number, which: string): Promise<void> {
  await upstream.allClosed(2000)
  for (const request of upstream.requests.filter((candidate) => candidate.abandoned === true)) {
    const after = (request.closedAt ?? Infinity) - answeredAt
    t.ok(after <= ABORT_MARGIN_MS, `${which}: attempt ${request.n} closed ${after.toFixed(0)} ms after the answer`)
  }
}

for (const endpoint of FAN_OUT_ENDPOINTS) {
  t.test(`/api/${endpoint}: FANOUT_REQUESTS attempts start at once, each with the request id`, async (t) => {
    const { get, upstream } = await setup(t, () => json(50), { FANOUT_REQUESTS: '4' })
    const answer = await get(endpoint, '?timeout=1000')
    t.equal(answer.status, 200)
    t.equal(upstream.requests.length, 4, 'four attempts')
    const arrivals = upstream.requests.map((request) => request.arrivedAt)
    t.ok(Math.max(...arrivals) - Math.min(...arrivals) < 30, 'together, with no hedge delay')
    t.ok(upstream.requests.every((request) => request.headers['x-request-id'] === answer.headers['x-request-id']))
  })

  t.test(`/api/${endpoint}: an invalid timeout is a JSON 400 and no upstream request is made`, async (t) => {
    const { get, upstream } = await setup(t, () => json(5), { MAX_TIMEOUT_MS: '5000' })
    const cases: Array<[string, string]> = [
      ['?timeout=1.5', 'Timeout has to be integer value.'],
      ['?timeout=0', 'Timeout has to be positive non zero value.'],
      ['?timeout=-5', 'Timeout has to be positive non zero value.'],
      ['?timeout=5001', 'Timeout has to be at most 5000 milliseconds.'],
      ['?timeout=1&timeout=2', 'Timeout has to be given only once.']
    ]
    for (const [query, message] of cases) {
      const answer = await get(endpoint, query)
      t.equal(answer.status, 400, query)
      t.same(answer.json, { success: false, statusCode: 400, error: 'Bad Request', message }, query)
    }
    t.equal(upstream.requests.length, 0)
  })

  t.test(`/api/${endpoint}: the deadline holds for a burst of requests whose attempts all hang`, async (t) => {
    const { service, upstream } = await setup(t, () => ({ kind: 'hang' }))
    const answers = await Promise.all(Array.from({ length: 20 }, () => call(`${service.url}/api/${endpoint}?timeout=300`)))
    const expected = endpoint === 'within-timeout' ? 200 : 408
    t.same([...new Set(answers.map((answer) => answer.status))], [expected], `every one ${expected}`)
    // The deadline counts from each request's arrival, which the service logs. The clients, in this same process,
    // open their 20 connections together with the service's 60 upstream ones, so they see arrival a little later.
    const responseTimes = service.logs.filter((line) => line.msg === 'api request').map((line) => Number(line.responseTimeMs))
    t.equal(responseTimes.length, 20)
    const offDeadline = responseTimes.filter((ms) => ms < 300 || ms > 300 + DEADLINE_MARGIN_MS)
    t.same(offDeadline, [], `every answer went out between 300 and ${300 + DEADLINE_MARGIN_MS} ms after its request arrived`)
    t.ok(answers.every((answer) => answer.elapsedMs >= 299), 'none before the deadline, as the clients saw it')
    t.equal(upstream.requests.length, 60)
    await upstream.allClosed(2000)
    t.ok(upstream.requests.every((request) => request.abandoned === true), 'every attempt aborted at the deadline')
  })

  t.test(`/api/${endpoint}: a client hanging up aborts every attempt, and is logged and counted as 499`, async (t) => {
    const { service, upstream } = await setup(t, () => ({ kind: 'hang' }))
    const client = await openConnection(service.url)
    client.get(`/api/${endpoint}?timeout=5000`)
    await eventually(() => upstream.requests.length >= 3, 5000)
    const hungUpAt = upstream.now()
    client.socket.destroy()
    await assertAllAbortedBy(t, upstream, hungUpAt, 'hang-up')
    t.ok(upstream.requests.every((request) => request.abandoned === true))
    const summary = (): Record<string, unknown> | undefined => service.logs.find((line) => line.msg === 'api request')
    await eventually(() => summary() !== undefined, 5000)
    t.match(summary(), { endpoint, outcome: 'client_closed', statusCode: 499, attempts: 3 })
    const metrics = (await call(`${service.url}/metrics`)).text
    t.equal(sample(metrics, `smart_requests_total{endpoint="${endpoint}",outcome="client_closed"}`), 1)
    t.equal(sample(metrics, `smart_upstream_attempts_total{endpoint="${endpoint}",result="aborted"}`), 3)
  })
}

t.test('/api/first: the first success, the upstream JSON unchanged; the others aborted at once', async (t) => {
  const { get, upstream, service } = await setup(t, byArrival(json(400), { kind: 'raw', body: '{"time": 60, "x":[1,2.50]}', delayMs: 60 }, failing(10)))
  const answer = await get('first', '?timeout=1000')
  t.equal(answer.status, 200)
  t.equal(answer.text, '{"success":true,"response":{"time": 60, "x":[1,2.50]}}', 'byte for byte')
  t.ok(answer.elapsedMs < 300, `at the first success, not the slowest attempt (${Math.round(answer.elapsedMs)} ms)`)
  const answeredAt = upstream.requests[1]?.closedAt ?? 0
  await assertAllAbortedBy(t, upstream, answeredAt, 'loser')
  t.equal(upstream.requests[0]?.abandoned, true, 'the slow attempt was aborted')
  t.match(answer.headers['server-timing'], /attempt1;dur=[\d.]+;desc="aborted", attempt2;dur=[\d.]+;desc="200", attempt3;dur=[\d.]+;desc="http_error"$/)
  t.match(service.logs.find((line) => line.msg === 'api request'), { endpoint: 'first', outcome: 'success', statusCode: 200, attempts: 3, winner: 2 })
})

t.test('/api/first: 502 when every attempt failed, naming each failure', async (t) => {
  const { get } = await setup(t, byArrival(failing(10), { kind: 'raw', body: 'oops', delayMs: 20 }, failing(30)))
  const answer = await get('first', '?timeout=1000')
  t.equal(answer.status, 502)
  t.match(answer.json, { success: false, statusCode: 502, error: 'Bad Gateway', message: /^Every upstream attempt failed: status 500; body is not JSON; status 500\.$/ })
})

t.test('/api/first: 408 when the deadline passes with no success, even with failures before it', async (t) => {
  const { get, upstream } = await setup(t, byArrival(failing(10), { kind: 'hang' }, { kind: 'hang' }))
  const answer = await get('first', '?timeout=250')
  t.equal(answer.status, 408)
  t.same(answer.json, { success: false, statusCode: 408, error: 'Request Timeout', message: 'No successful upstream answer within the 250 ms timeout.' })
  t.ok(answer.elapsedMs >= 249 && answer.elapsedMs < 250 + DEADLINE_MARGIN_MS, `${Math.round(answer.elapsedMs)} ms`)
  await upstream.allClosed(2000)
})

t.test('/api/all: once every attempt has ended, the successes in the order they arrived; failures left out', async (t) => {
  // Arrival order 1, 2, 3; answers come back 3 (30 ms), 2 fails (50 ms), 1 (120 ms).
  const { get, service } = await setup(t, byArrival(json(120), failing(50), json(30)))
  const answer = await get('all', '?timeout=1000')
  t.equal(answer.status, 200)
  t.equal(answer.text, '{"success":true,"response":[{"time":30},{"time":120}]}')
  t.ok(answer.elapsedMs >= 119, `after the last attempt ended (${Math.round(answer.elapsedMs)} ms)`)
  t.match(service.logs.find((line) => line.msg === 'api request'), { endpoint: 'all', outcome: 'success', attempts: 3, winner: 3, successes: 2 })
})

t.test('/api/all: 408 when the deadline passes before every attempt ended, and every attempt still running is aborted', async (t) => {
  const { get, upstream } = await setup(t, byArrival(json(20), json(30), { kind: 'hang' }))
  const answer = await get('all', '?timeout=300')
  t.equal(answer.status, 408)
  t.match(answer.json, { success: false, statusCode: 408, message: 'No successful upstream answer within the 300 ms timeout.' })
  t.ok(answer.elapsedMs >= 299 && answer.elapsedMs < 300 + DEADLINE_MARGIN_MS, `${Math.round(answer.elapsedMs)} ms`)
  await upstream.allClosed(2000)
  t.equal(upstream.requests[2]?.abandoned, true)
})

t.test('/api/all: 502 when none succeeded', async (t) => {
  const { get } = await setup(t, () => failing(10))
  const answer = await get('all', '?timeout=1000')
  t.equal(answer.status, 502)
  t.match(answer.json, { statusCode: 502, message: /^Every upstream attempt failed: status 500; status 500; status 500\.$/ })
})

t.test('/api/within-timeout: at the deadline, the successes so far; the attempts still running aborted', async (t) => {
  const { get, upstream, service } = await setup(t, byArrival(json(40), { kind: 'hang' }, json(20)))
  const answer = await get('within-timeout', '?timeout=300')
  t.equal(answer.status, 200)
  t.equal(answer.text, '{"success":true,"response":[{"time":20},{"time":40}]}')
  t.ok(answer.elapsedMs >= 299 && answer.elapsedMs < 300 + DEADLINE_MARGIN_MS, `sent at the deadline (${Math.round(answer.elapsedMs)} ms)`)
  await upstream.allClosed(2000)
  t.equal(upstream.requests[1]?.abandoned, true)
  t.match(service.logs.find((line) => line.msg === 'api request'), { endpoint: 'within-timeout', outcome: 'success', statusCode: 200, successes: 2 })
  const metrics = (await call(`${service.url}/metrics`)).text
  t.equal(sample(metrics, 'smart_deadline_overshoot_seconds_count{endpoint="within-timeout"}'), 1, 'an answer at the deadline counts its lateness')
})

t.test('/api/within-timeout: as soon as every attempt has ended, before the deadline', async (t) => {
  const { get } = await setup(t, byArrival(json(40), failing(10), json(60)))
  const answer = await get('within-timeout', '?timeout=5000')
  t.equal(answer.status, 200)
  t.equal(answer.text, '{"success":true,"response":[{"time":40},{"time":60}]}')
  t.ok(answer.elapsedMs < 1000, `not at the deadline (${Math.round(answer.elapsedMs)} ms)`)
})

t.test('/api/within-timeout: [] when nothing succeeded, never 502', async (t) => {
  const { get } = await setup(t, () => failing(10))
  const answer = await get('within-timeout', '?timeout=1000')
  t.equal(answer.status, 200)
  t.equal(answer.text, '{"success":true,"response":[]}')
})

t.test('without timeout, MAX_TIMEOUT_MS is the deadline', async (t) => {
  const { get } = await setup(t, () => ({ kind: 'hang' }), { MAX_TIMEOUT_MS: '300' })
  const [first, all, within] = await Promise.all([get('first'), get('all'), get('within-timeout')])
  t.equal(first.status, 408)
  t.equal(all.status, 408)
  t.equal(within.status, 200)
  t.match(first.json, { message: 'No successful upstream answer within the 300 ms timeout.' })
})

t.test('other methods answer a JSON 405 on every endpoint', async (t) => {
  const { service } = await setup(t, () => json(5))
  for (const endpoint of ['smart', ...FAN_OUT_ENDPOINTS]) {
    const answer = await call(`${service.url}/api/${endpoint}`, { method: 'POST' })
    t.equal(answer.status, 405)
    t.equal(answer.headers.allow, 'GET, HEAD')
    t.same(answer.json, { success: false, statusCode: 405, error: 'Method Not Allowed', message: `POST is not supported on /api/${endpoint}; use GET.` })
  }
})
