import t, { type Test } from 'tap'
import { Agent, get, request as httpRequest } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from '../helpers/eventually.js'
import { openConnection } from '../helpers/raw-http.js'
import {
  DEFAULT_PROFILE,
  DEFAULT_SEED,
  startSimulator,
  type RunningSimulator,
  type SimulatorOptions,
  type SimulatorProfile
} from '../../simulator/simulator.js'

interface Answered {
  kind: 'answered'
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
  elapsedMs: number
  reusedSocket: boolean
}

interface Unanswered {
  kind: 'unanswered'
  /** 'timeout' when the client gave up, otherwise the socket error code (e.g. ECONNRESET). */
  reason: string
  elapsedMs: number
}

type Reply = Answered | Unanswered

interface GetOptions {
  /** How long the client waits for a complete answer before it gives up and disconnects. */
  timeoutMs?: number
  agent?: Agent
}

/** One GET with a client-side time limit; never rejects, so hangs and resets are plain values to assert on. */
function getOnce (url: string, { timeoutMs = 2000, agent }: GetOptions = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const signal = AbortSignal.timeout(timeoutMs)
    const started = performance.now()
    const elapsed = (): number => performance.now() - started
    const request = get(url, { agent: agent ?? false, signal }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => {
        resolve({
          kind: 'answered',
          status: response.statusCode as number,
          headers: response.headers,
          body,
          elapsedMs: elapsed(),
          reusedSocket: request.reusedSocket
        })
      })
    })
    request.on('error', (error: NodeJS.ErrnoException) => {
      resolve({ kind: 'unanswered', reason: signal.aborted ? 'timeout' : String(error.code), elapsedMs: elapsed() })
    })
  })
}

/** Names the outcome of one work request the way the simulator's profile does; ok answers carry their time. */
function classify (reply: Reply): string {
  if (reply.kind === 'unanswered') return 'hang'
  if (reply.status === 500) return 'error'
  try {
    return `ok:${(JSON.parse(reply.body) as { time: number }).time}`
  } catch {
    return 'invalid-json'
  }
}

/** Fast answers, every kind of outcome: the shape of a sequence, without the wait. */
const MIXED_FAST_PROFILE: Partial<SimulatorProfile> = {
  minDelayMs: 0,
  maxDelayMs: 10,
  errorRate: 0.2,
  invalidJsonRate: 0.2,
  hangRate: 0.15
}

/** Long enough to beat every other delay here, short enough that the client's wait stays cheap. */
const HANG_TIMEOUT_MS = 500

const ALWAYS_OK: Partial<SimulatorProfile> = { errorRate: 0, invalidJsonRate: 0, hangRate: 0 }

async function withSimulator (
  t: Test,
  options: SimulatorOptions
): Promise<RunningSimulator> {
  const simulator = await startSimulator(options)
  t.teardown(() => simulator.close())
  return simulator
}

/** Outcomes of `count` work requests sent one after another, so that "the N-th request" is well defined. */
async function sequenceOf (options: SimulatorOptions, count: number, healthChecksBetween = false): Promise<string[]> {
  const simulator = await startSimulator(options)
  const outcomes: string[] = []
  try {
    for (let index = 0; index < count; index++) {
      if (healthChecksBetween) await getOnce(`${simulator.url}health`)
      outcomes.push(classify(await getOnce(simulator.url, { timeoutMs: HANG_TIMEOUT_MS })))
    }
  } finally {
    await simulator.close()
  }
  return outcomes
}

function countTimers (): number {
  return process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length
}

t.test('the default profile is the upstream of SPEC §1', async (t) => {
  t.same(DEFAULT_PROFILE, { minDelayMs: 100, maxDelayMs: 600, errorRate: 0.1, invalidJsonRate: 0.1, hangRate: 0.05 })
  t.ok(Object.isFrozen(DEFAULT_PROFILE), 'nobody can change the defaults for everyone else')
})

t.test('with no options it listens on an ephemeral loopback port and answers work within 100-600 ms', async (t) => {
  const simulator = await withSimulator(t, {})
  t.match(simulator.url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
  t.not(new URL(simulator.url).port, '0')
  // The default seed's first request is a success: the demo starts with one.
  const reply = await getOnce(simulator.url)
  t.equal(reply.kind, 'answered')
  if (reply.kind !== 'answered') return
  t.equal(reply.status, 200)
  t.equal(reply.headers['content-type'], 'application/json')
  const { time } = JSON.parse(reply.body) as { time: number }
  t.ok(Number.isInteger(time) && time >= 100 && time <= 600, `time ${time} is within 100-600`)
  t.ok(reply.elapsedMs >= time - 1, `waited ${reply.elapsedMs} ms for time ${time}`)
})

t.test('GET /health answers at once and does not shift the sequence of outcomes', async (t) => {
  const simulator = await withSimulator(t, { profile: { minDelayMs: 5000, maxDelayMs: 5000 } })
  for (const path of ['health', 'health?probe=1']) {
    const reply = await getOnce(`${simulator.url}${path}`)
    t.equal(reply.kind, 'answered')
    if (reply.kind !== 'answered') continue
    t.equal(reply.status, 200)
    t.same(JSON.parse(reply.body), { status: 'ok' })
    t.ok(reply.elapsedMs < 1000, `/${path} took ${reply.elapsedMs} ms, not the 5 s work delay`)
  }
  const plain = await sequenceOf({ seed: 5, profile: MIXED_FAST_PROFILE }, 12)
  const withHealthChecks = await sequenceOf({ seed: 5, profile: MIXED_FAST_PROFILE }, 12, true)
  t.same(withHealthChecks, plain)
})

t.test('a seed fixes the sequence of outcomes; another seed gives another sequence', async (t) => {
  const first = await sequenceOf({ seed: 7, profile: MIXED_FAST_PROFILE }, 20)
  const again = await sequenceOf({ seed: 7, profile: MIXED_FAST_PROFILE }, 20)
  const otherSeed = await sequenceOf({ seed: 8, profile: MIXED_FAST_PROFILE }, 20)
  t.same(again, first, 'same seed, same outcomes and times')
  t.notSame(otherSeed, first, 'different seed, different sequence')
  const kinds = new Set(first.map((outcome) => outcome.replace(/:\d+$/, '')))
  t.same([...kinds].sort(), ['error', 'hang', 'invalid-json', 'ok'], 'the sequence mixes every kind of answer')

  const unseeded = await sequenceOf({ profile: MIXED_FAST_PROFILE }, 20)
  const defaultSeed = await sequenceOf({ seed: DEFAULT_SEED, profile: MIXED_FAST_PROFILE }, 20)
  t.same(unseeded, defaultSeed, 'without a seed, runs repeat with the default one')
})

t.test('errorRate 1: every answer is a delayed 500 with a JSON error body', async (t) => {
  const simulator = await withSimulator(t, {
    profile: { minDelayMs: 60, maxDelayMs: 80, errorRate: 1, invalidJsonRate: 0, hangRate: 0 }
  })
  for (let index = 0; index < 5; index++) {
    const reply = await getOnce(`${simulator.url}any/path`)
    t.equal(reply.kind, 'answered')
    if (reply.kind !== 'answered') continue
    t.equal(reply.status, 500)
    t.equal(reply.headers['content-type'], 'application/json')
    t.match(JSON.parse(reply.body), { error: 'Internal Server Error', message: String })
    t.ok(reply.elapsedMs >= 59, `a failure also takes its delay (${reply.elapsedMs} ms)`)
  }
})

t.test('invalidJsonRate 1: every answer is a 200 whose body is not JSON', async (t) => {
  const simulator = await withSimulator(t, {
    profile: { minDelayMs: 0, maxDelayMs: 10, errorRate: 0, invalidJsonRate: 1, hangRate: 0 }
  })
  for (let index = 0; index < 5; index++) {
    const reply = await getOnce(simulator.url)
    t.equal(reply.kind, 'answered')
    if (reply.kind !== 'answered') continue
    t.equal(reply.status, 200)
    t.throws(() => JSON.parse(reply.body), SyntaxError, `body ${JSON.stringify(reply.body)} is not JSON`)
  }
})

t.test('hangRate 1: no answer ever comes, and close() still resolves at once', async (t) => {
  const simulator = await startSimulator({ profile: { errorRate: 0, invalidJsonRate: 0, hangRate: 1 } })
  const timedOut = await getOnce(simulator.url, { timeoutMs: HANG_TIMEOUT_MS })
  t.match(timedOut, { kind: 'unanswered', reason: 'timeout' }, 'the client gives up waiting')

  const stillWaiting = [1, 2, 3].map(() => getOnce(simulator.url, { timeoutMs: 10_000 }))
  await sleep(200)
  const closeStarted = performance.now()
  await simulator.close()
  const closeMs = performance.now() - closeStarted
  t.ok(closeMs < 500, `close() took ${closeMs} ms with three hanging requests open`)
  for (const reply of await Promise.all(stillWaiting)) {
    t.match(reply, { kind: 'unanswered' })
    t.not((reply as Unanswered).reason, 'timeout', 'the server dropped the connection; the client did not time out')
  }
})

t.test('delays stay within [minDelayMs, maxDelayMs] and `time` is the delay actually waited', async (t) => {
  const simulator = await withSimulator(t, { seed: 3, profile: { ...ALWAYS_OK, minDelayMs: 50, maxDelayMs: 250 } })
  const replies = await Promise.all(Array.from({ length: 20 }, () => getOnce(simulator.url)))
  const times = new Set<number>()
  for (const reply of replies) {
    t.equal(reply.kind, 'answered')
    if (reply.kind !== 'answered') continue
    const { time } = JSON.parse(reply.body) as { time: number }
    times.add(time)
    t.ok(Number.isInteger(time) && time >= 50 && time <= 250, `time ${time} within [50, 250]`)
    // Timers never fire early; the upper margin absorbs a loaded test machine.
    t.ok(reply.elapsedMs >= time - 1 && reply.elapsedMs <= time + 300, `waited ${reply.elapsedMs} ms for time ${time}`)
  }
  t.ok(times.size > 10, `delays are spread out (${times.size} distinct values of 20)`)
})

t.test('keep-alive: one connection carries several requests', async (t) => {
  const simulator = await withSimulator(t, { profile: { ...ALWAYS_OK, minDelayMs: 0, maxDelayMs: 5 } })
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const replies: Reply[] = []
  for (let index = 0; index < 3; index++) replies.push(await getOnce(simulator.url, { agent }))
  t.same(replies.map((reply) => reply.kind === 'answered' && reply.status), [200, 200, 200])
  t.same(replies.map((reply) => reply.kind === 'answered' && reply.reusedSocket), [false, true, true])
})

t.test('a client that disconnects while waiting leaves no timer running on the server', async (t) => {
  const simulator = await withSimulator(t, { profile: { ...ALWAYS_OK, minDelayMs: 10_000, maxDelayMs: 10_000 } })
  const timersBefore = countTimers()
  // A raw connection: unlike an HTTP client it schedules no timers of its own.
  const client = await openConnection(simulator.url)
  client.get('/')
  await eventually(() => countTimers() === timersBefore + 1, 2000)
  t.pass('the server scheduled the 10 s answer')
  client.socket.destroy()
  const clearedAfterMs = await eventually(() => countTimers() === timersBefore, 2000)
  t.ok(clearedAfterMs < 1000, `the timer was cleared ${clearedAfterMs} ms after the client left, not after 10 s`)
})

t.test('close() clears pending answers, refuses new connections and can be called again', async (t) => {
  const simulator = await startSimulator({ profile: { ...ALWAYS_OK, minDelayMs: 10_000, maxDelayMs: 10_000 } })
  const timersBefore = countTimers()
  const pending = getOnce(simulator.url, { timeoutMs: 20_000 })
  await eventually(() => countTimers() > timersBefore, 2000)
  const closeStarted = performance.now()
  const closing = simulator.close()
  t.equal(simulator.close(), closing, 'a second close() shares the first one')
  await closing
  t.ok(performance.now() - closeStarted < 500, 'close() does not wait for the 10 s answer')
  t.match(await pending, { kind: 'unanswered' }, 'the pending request was dropped, not answered')
  await eventually(() => countTimers() <= timersBefore, 1000)
  t.match(await getOnce(simulator.url), { kind: 'unanswered', reason: 'ECONNREFUSED' })
})

t.test('other methods than GET are refused with 405', async (t) => {
  const simulator = await withSimulator(t, {})
  const reply = await new Promise<{ status: number, allow: string | undefined, body: string }>((resolve, reject) => {
    const request = httpRequest(simulator.url, { method: 'POST', agent: false }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode as number, allow: response.headers.allow, body }))
    })
    request.on('error', reject)
    request.end('{}')
  })
  t.equal(reply.status, 405)
  t.equal(reply.allow, 'GET')
  t.match(JSON.parse(reply.body), { error: 'Method Not Allowed' })
})

t.test('an IPv6 host gives a bracketed url', async (t) => {
  const simulator = await withSimulator(t, { host: '::1', profile: ALWAYS_OK })
  t.match(simulator.url, /^http:\/\/\[::1\]:\d+\/$/)
  t.match(await getOnce(`${simulator.url}health`), { kind: 'answered', status: 200 })
})

t.test('a port already in use rejects start-up', async (t) => {
  const simulator = await withSimulator(t, {})
  const port = Number(new URL(simulator.url).port)
  await t.rejects(startSimulator({ port }), { code: 'EADDRINUSE' })
})

t.test('invalid seeds and profiles are refused with a message naming the setting', async (t) => {
  const invalid: Array<[SimulatorOptions, RegExp]> = [
    [{ seed: 1.5 }, /seed/],
    [{ seed: -1 }, /seed/],
    [{ seed: 2 ** 32 }, /seed/],
    [{ profile: { minDelayMs: -1 } }, /minDelayMs/],
    [{ profile: { minDelayMs: 1.5 } }, /minDelayMs/],
    [{ profile: { minDelayMs: 100, maxDelayMs: 99 } }, /maxDelayMs/],
    [{ profile: { maxDelayMs: 700.5 } }, /maxDelayMs/],
    [{ profile: { maxDelayMs: 2 ** 31 } }, /maxDelayMs/],
    [{ profile: { errorRate: 1.1 } }, /errorRate/],
    [{ profile: { invalidJsonRate: Number.NaN } }, /invalidJsonRate/],
    [{ profile: { hangRate: -0.1 } }, /hangRate/],
    [{ profile: { errorRate: 0.5, invalidJsonRate: 0.5, hangRate: 0.1 } }, /must not exceed 1/]
  ]
  for (const [options, message] of invalid) {
    await t.rejects(startSimulator(options), { name: 'RangeError', message }, JSON.stringify(options))
  }
  // In floating point 0.33 + 0.56 + 0.11 is 1.0000000000000002.
  const addsUpToOne = await startSimulator({ seed: 0xFFFF_FFFF, profile: { errorRate: 0.33, invalidJsonRate: 0.56, hangRate: 0.11 } })
  await addsUpToOne.close()
  t.pass('shares that add up to 1 up to rounding, and the largest seed, are accepted')
})
