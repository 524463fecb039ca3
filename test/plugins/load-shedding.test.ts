import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { Agent } from 'node:http'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from '../helpers/eventually.js'
import { openConnection } from '../helpers/raw-http.js'
import { call, withService, type ClientAnswer, type TestUpstream } from '../helpers/service.js'
import { sample } from '../helpers/prometheus.js'

/** Keeps this process's event loop busy, as a flood of requests would. */
function saturateEventLoop (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
}

/** The share of requests the service sheds right now, from its metrics (which are never shed). */
async function shedRatio (url: string, agent: Agent): Promise<number> {
  return sample((await call(`${url}/metrics`, { agent })).text, 'smart_overload_shed_ratio')
}

/** How often the overload test checks the service's state (a check of the share shed is a request to /metrics). */
const POLL_MS = 10

/**
 * Opens `count` new connections at once, one GET each, while the event loop is busy 15 ms of every 16, as a
 * service that cannot keep up: it accepts about one connection per turn, and the others, and every probe,
 * wait in the kernel's accept queue. Resolves with the answers once every one has been served or shed.
 */
async function connectionStorm (url: string, count: number): Promise<ClientAnswer[]> {
  const stalls = setInterval(() => saturateEventLoop(15), 16)
  try {
    return await Promise.all(Array.from({ length: count }, () => call(url)))
  } finally {
    clearInterval(stalls)
  }
}

t.test('a lasting overload sheds /api/smart with a JSON 503 and Retry-After, but not probes or metrics', async (t) => {
  // The service runs in this process, so blocking this process's event loop saturates the service.
  const { service, upstream } = await withService(t, {
    script: () => ({ kind: 'json' }),
    env: { OVERLOAD_MAX_WAIT_MS: '50', RETRY_AFTER_SECONDS: '2' }
  })
  // Connections opened before the storm: requests on them are read every turn, without waiting to be accepted.
  const agent = new Agent({ keepAlive: true, maxSockets: 4 })
  // Registered last, so it runs first: before the service closes.
  t.teardown(() => agent.destroy())
  await Promise.all(Array.from({ length: 4 }, () => call(`${service.url}/health`, { agent })))
  t.equal((await call(`${service.url}/api/smart?timeout=1000`, { agent })).status, 200, 'healthy at first')

  const storm = connectionStorm(`${service.url}/api/smart?timeout=10000`, 300)
  // Once most probes of the last second waited over 50 ms, the share shed grows by a tenth per probe.
  await eventually(() => service.app.isUnderPressure(), 4000, POLL_MS)
  t.ok(await shedRatio(service.url, agent) < 1, 'the share shed grows step by step')
  await eventually(async () => await shedRatio(service.url, agent) === 1, 4000, POLL_MS)
  const [shed, health, ready, metrics] = await Promise.all([
    call(`${service.url}/api/smart?timeout=1000`, { agent }),
    call(`${service.url}/health`, { agent }),
    call(`${service.url}/ready`, { agent }),
    call(`${service.url}/metrics`, { agent })
  ])
  t.equal(shed.status, 503)
  t.equal(shed.headers['retry-after'], '2')
  t.match(shed.json, { success: false, statusCode: 503, error: 'Service Unavailable', message: 'The service is overloaded; retry shortly.' })
  t.equal(health.status, 200, 'liveness is not shed')
  t.equal(ready.status, 200, 'readiness is not shed')
  t.equal(metrics.status, 200, 'metrics are not shed')
  const stormAnswers = await storm
  const stormShed = stormAnswers.filter((answer) => answer.status === 503).length
  t.equal(stormShed + stormAnswers.filter((answer) => answer.status === 200).length, 300, 'every storm request was served or shed')
  t.equal(upstream.requests.length, 1 + 300 - stormShed, 'shed requests never reached the upstream')

  // The median covers the last second, and the share falls a tenth per probe: the service takes all new
  // work again about two seconds after it recovered.
  await eventually(() => !service.app.isUnderPressure(), 4000, POLL_MS)
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'back to normal once the waits are short again')
  const { text } = await call(`${service.url}/metrics`)
  t.equal(sample(text, 'smart_requests_total{endpoint="smart",outcome="overloaded"}'), stormShed + 1)
})

/** A client in a process of its own that opens `count` connections at once, one GET each, and prints the statuses. */
const BURST_CLIENT = `
import { get } from 'node:http'
const [url, count] = process.argv.slice(1)
const one = () => new Promise((resolve) => {
  get(url, { agent: false }, (response) => { response.resume(); response.on('end', () => resolve(response.statusCode)) })
    .on('error', (error) => resolve(error.code))
})
console.log(JSON.stringify(await Promise.all(Array.from({ length: Number(count) }, one))))
`

/** An upstream in a process of its own that answers every request 200 with JSON after `delayMs` and prints its port. */
const UPSTREAM_PROCESS = `
import { createServer } from 'node:http'
const delayMs = Number(process.argv[1])
const server = createServer((request, response) => {
  setTimeout(() => {
    response.writeHead(200, { 'content-type': 'application/json' })
    response.end('{"time":' + delayMs + '}')
  }, delayMs)
})
server.listen(0, '127.0.0.1', () => console.log(server.address().port))
`

/**
 * The upstream of the burst test runs apart from the service, as a real one does: in the service's process its
 * 200 answers would take turns of the same event loop whose waits decide shedding, and the test would measure its
 * own upstream rather than the service.
 */
async function startUpstreamProcess (delayMs: number): Promise<TestUpstream> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', UPSTREAM_PROCESS, String(delayMs)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const [port] = await once(child.stdout, 'data') as [Buffer]
  return {
    url: `http://127.0.0.1:${port.toString().trim()}/`,
    close: async () => {
      const exited = once(child, 'exit')
      child.kill()
      await exited
    }
  }
}

t.test('with the defaults, a burst it can absorb is served: 200 clients connecting at once during a start-up stall, no 503', async (t) => {
  const { service } = await withService(t, { upstream: await startUpstreamProcess(100) })
  const client = spawn(process.execPath, ['--input-type=module', '-e', BURST_CLIENT, `${service.url}/api/smart?timeout=2000`, '200'], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  client.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  // The connections arrive while the service is busy with one long turn, as when it starts up (compiling
  // code) or collects garbage: they queue, then are taken one per turn.
  saturateEventLoop(400)
  await once(client, 'exit')
  const statuses = JSON.parse(output) as Array<number | string>
  t.same(countStatuses(statuses), { 200: 200 }, 'every request answered 200')
  t.notOk(service.app.isUnderPressure(), 'and the service does not shed what comes next')
})

function countStatuses (statuses: Array<number | string>): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1
  return counts
}

t.test('beyond MAX_CLIENT_CONNECTIONS new connections are closed at once; the open ones are served', async (t) => {
  const { service } = await withService(t, { script: () => ({ kind: 'json' }), env: { MAX_CLIENT_CONNECTIONS: '2' } })
  const first = await openConnection(service.url)
  const second = await openConnection(service.url)
  // Node counts a connection once it has accepted it: give the second one that moment.
  await sleep(50)

  const third = await openConnection(service.url)
  await sleep(500)
  t.ok(third.closedAt() !== undefined, 'the third connection was closed within 500 ms')
  t.equal(third.raw(), '', 'without an answer')
  third.socket.destroy()

  second.get('/api/smart?timeout=1000')
  await once(second.socket, 'data')
  second.socket.end()
  const [answer] = await second.responses
  t.equal(answer?.status, 200, 'an open connection is still served')
  first.socket.destroy()
  await sleep(50)
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200, 'a new connection is accepted once one closed')
})

/** The slow call's hedge comes due this long after it started; its first attempt answers much later. */
const SLOW_CALL_HEDGE_DELAY_MS = 2000

/**
 * A call whose first attempt answers after 3500 ms, made just before a storm of 200 new connections while
 * the event loop is busy 15 ms of every 16: the service accepts about one connection per turn, the others
 * (and every probe) wait in the kernel's accept queue for seconds, and the service sheds. The call's hedge
 * comes due while it does.
 */
async function slowCallDuringOverload (t: Test, environment: Record<string, string>): Promise<{ upstreamRequestsOfSlowCall: number, metrics: string }> {
  const { service, upstream } = await withService(t, {
    script: (n) => n === 1
      ? { kind: 'json', body: { time: 3500 }, delayMs: 3500 }
      : { kind: 'json' },
    env: { OVERLOAD_MAX_WAIT_MS: '20', HEDGE_DELAY_MS: String(SLOW_CALL_HEDGE_DELAY_MS), ...environment }
  })
  const slowCall = call(`${service.url}/api/smart?timeout=6000`)
  await eventually(() => upstream.requests.length > 0, 5000)
  const startedAt = performance.now()
  let sheddingWhenTheHedgeCameDue = false
  const watch = setInterval(() => {
    const elapsed = performance.now() - startedAt
    if (elapsed > SLOW_CALL_HEDGE_DELAY_MS - 100 && elapsed < SLOW_CALL_HEDGE_DELAY_MS) sheddingWhenTheHedgeCameDue ||= service.app.isUnderPressure()
  }, 10)
  const stalls = setInterval(() => saturateEventLoop(15), 16)
  const storm = await Promise.all(Array.from({ length: 200 }, () => call(`${service.url}/api/smart?timeout=8000`)))
  clearInterval(stalls)
  clearInterval(watch)
  t.ok(sheddingWhenTheHedgeCameDue, 'the service was shedding when the hedge came due')
  t.ok(storm.some((answer) => answer.status === 503), 'the storm was shed in part')
  const slow = await slowCall
  t.equal(slow.status, 200, 'the slow call got its answer')
  const stormServed = storm.filter((answer) => answer.status === 200).length
  const { text } = await call(`${service.url}/metrics`)
  return { upstreamRequestsOfSlowCall: upstream.requests.length - stormServed, metrics: text }
}

t.test('with OVERLOAD_HOLD_HEDGES, a call in flight does not hedge while the service sheds load', async (t) => {
  const { upstreamRequestsOfSlowCall, metrics } = await slowCallDuringOverload(t, { OVERLOAD_HOLD_HEDGES: 'true' })
  t.equal(upstreamRequestsOfSlowCall, 1, 'the slow call sent no hedge')
  t.equal(sample(metrics, 'smart_hedges_throttled_total{reason="overload"}'), 1)
  t.equal(sample(metrics, 'smart_hedges_total'), 0)
})

t.test('by default the schedule holds while shedding: the call in flight hedges', async (t) => {
  const { upstreamRequestsOfSlowCall, metrics } = await slowCallDuringOverload(t, {})
  t.equal(upstreamRequestsOfSlowCall, 3, 'the slow call sent its two hedges')
  t.equal(sample(metrics, 'smart_hedges_total'), 1)
})
