import t, { type Test } from 'tap'
import { call, type ClientAnswer } from '../helpers/service.js'
import { eventually } from '../helpers/eventually.js'
import { DEFAULT_PROFILE, SIMULATOR_PROFILES, startSimulator, type SimulatorOptions } from '../../simulator/simulator.js'

const ALWAYS_OK = { errorRate: 0, invalidJsonRate: 0, hangRate: 0 }

/** A simulator for one test, with the lines it logs. */
async function withSimulator (t: Test, options: SimulatorOptions) {
  const lines: string[] = []
  const simulator = await startSimulator({ ...options, log: (line) => lines.push(line) })
  t.teardown(() => simulator.close())
  return { url: simulator.url, lines }
}

t.test('the named profiles: the upstream of SPEC §1, twice as slow, five times as fast, and overloaded', async (t) => {
  t.equal(SIMULATOR_PROFILES.exponea, DEFAULT_PROFILE)
  t.same(SIMULATOR_PROFILES.slow, { ...DEFAULT_PROFILE, minDelayMs: 2 * 100, maxDelayMs: 2 * 600 })
  t.same(SIMULATOR_PROFILES.fast, { ...DEFAULT_PROFILE, minDelayMs: 100 / 5, maxDelayMs: 600 / 5 })
  t.same(SIMULATOR_PROFILES.overloaded, { ...DEFAULT_PROFILE, capacity: 32 })
})

t.test('fast answers within its delays', async (t) => {
  const { url } = await withSimulator(t, { profile: { ...SIMULATOR_PROFILES.fast, ...ALWAYS_OK } })
  for (let i = 0; i < 10; i++) {
    const answer = await call(url)
    t.equal(answer.status, 200)
    const time = (answer.json as { time: number }).time
    t.ok(time >= 20 && time <= 120, `time ${time}`)
    t.ok(answer.elapsedMs >= 19 && answer.elapsedMs < 120 + 100, `answered after ${answer.elapsedMs} ms`)
  }
})

t.test('beyond its capacity, a work request is answered 503 with Retry-After: 1 at once', async (t) => {
  const { url } = await withSimulator(t, { profile: { ...ALWAYS_OK, minDelayMs: 300, maxDelayMs: 300, capacity: 2 } })
  const inProgress = [call(url), call(url)]
  await new Promise((resolve) => setTimeout(resolve, 50))
  const shed = await call(url)
  t.equal(shed.status, 503)
  t.equal(shed.headers['retry-after'], '1')
  t.match(shed.json, { error: 'Service Unavailable', message: 'simulated overload: more than 2 requests in progress' })
  t.ok(shed.elapsedMs < 100, `at once (${shed.elapsedMs} ms)`)
  t.same((await Promise.all(inProgress)).map((answer) => answer.status), [200, 200])
  t.equal((await call(url)).status, 200, 'served again once there is room')
  t.equal((await call(`${url}health`)).status, 200)
})

t.test('a hanging request counts against the capacity until its client leaves', async (t) => {
  const { url } = await withSimulator(t, { profile: { errorRate: 0, invalidJsonRate: 0, hangRate: 1, capacity: 1 } })
  const controller = new AbortController()
  const hanging = fetch(url, { signal: controller.signal }).catch((error: Error) => error.name)
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal((await call(url)).status, 503)
  controller.abort()
  t.equal(await hanging, 'AbortError')
  await eventually(async () => (await call(url, { headers: { 'x-timeout-ms': '10' } })).status === 504, 2000)
})

t.test('x-timeout-ms: the simulator never works past the caller\'s deadline, and logs that it gave up', async (t) => {
  const { url, lines } = await withSimulator(t, { profile: { ...ALWAYS_OK, minDelayMs: 5000, maxDelayMs: 5000 } })
  const answer = await call(url, { headers: { 'x-timeout-ms': '150', 'x-request-id': 'req-7', 'x-attempt': '2' } })
  t.equal(answer.status, 504)
  t.match(answer.json, { error: 'Gateway Timeout', message: "gave up at the caller's deadline (x-timeout-ms 150)" })
  t.ok(answer.elapsedMs >= 149 && answer.elapsedMs < 150 + 100, `gave up after ${answer.elapsedMs} ms`)
  t.same(lines, ["gave up at the caller's deadline: x-timeout-ms 150, x-request-id req-7, x-attempt 2"])
})

t.test('x-timeout-ms: a request that never gets an answer gets a 504 at the deadline instead', async (t) => {
  const { url, lines } = await withSimulator(t, { profile: { errorRate: 0, invalidJsonRate: 0, hangRate: 1 } })
  const answer = await call(url, { headers: { 'x-timeout-ms': '100' } })
  t.equal(answer.status, 504)
  t.ok(answer.elapsedMs < 100 + 100, `after ${answer.elapsedMs} ms`)
  t.same(lines, ["gave up at the caller's deadline: x-timeout-ms 100, x-request-id -, x-attempt -"])
})

t.test('without a log, the simulator gives up just as well, silently', async (t) => {
  const simulator = await startSimulator({ profile: { ...ALWAYS_OK, minDelayMs: 5000, maxDelayMs: 5000 } })
  t.teardown(() => simulator.close())
  t.equal((await call(simulator.url, { headers: { 'x-timeout-ms': '20' } })).status, 504)
})

t.test('x-timeout-ms: work that fits in the deadline is answered as usual; an unreadable header is ignored', async (t) => {
  const { url, lines } = await withSimulator(t, { profile: { ...ALWAYS_OK, minDelayMs: 50, maxDelayMs: 50 } })
  const answers: ClientAnswer[] = []
  for (const value of ['1000', '50', 'soon', '-5', '1e3']) answers.push(await call(url, { headers: { 'x-timeout-ms': value } }))
  t.same(answers.map((answer) => answer.status), [200, 200, 200, 200, 200])
  t.same(lines, [])
})

t.test('a capacity that is not a non-negative integer is refused', async (t) => {
  for (const capacity of [-1, 1.5, Number.NaN]) {
    await t.rejects(startSimulator({ profile: { capacity } }), { message: `simulator profile: capacity must be a non-negative integer, got ${capacity}` })
  }
})
