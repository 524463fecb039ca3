import t, { type Test } from 'tap'
import { eventually } from './helpers/eventually.js'
import { gzipOnce, startScriptedUpstream, type ScriptedUpstream, type UpstreamBehaviour } from './helpers/scripted-upstream.js'
import { startSilentUpstream } from './helpers/silent-upstream.js'
import { call, withService, type ClientAnswer } from './helpers/service.js'

/**
 * Fault injection: every way an upstream can fail, each against GET /api/smart with a `timeout` and without
 * one. For each: the status SPEC §2 gives, the JSON body, a bound on the answer time, and that the service
 * left no upstream socket open except pooled keep-alive sockets of exchanges that ended normally.
 */

/** The `timeout` sent in the "with timeout" runs. */
const TIMEOUT_MS = 500
/** The server's ceiling, the deadline of the "without timeout" runs (different, so each run shows its own). */
const MAX_TIMEOUT_MS = 800
/** The service's default hedge delay (SPEC §2). */
const HEDGE_DELAY_MS = 300
/** The service's default MAX_BODY_BYTES. */
const MAX_BODY_BYTES = 1024 * 1024
/** Answers may arrive this much after their deadline or scripted delay: timers, sockets, a shared machine. */
const MARGIN_MS = 100
/**
 * A fault that fails every attempt at once must be answered well before the hedge delay: a first attempt
 * that failed fires the hedges at once, and their failures end the call.
 */
const FAST_FAILURE_MS = HEDGE_DELAY_MS - 50
/** How long the service may take, after its answer, to close the upstream exchanges it abandoned. */
const CLOSE_GRACE_MS = 100

interface Mode {
  name: string
  query: string
  /** The deadline the request runs under: its timeout, or MAX_TIMEOUT_MS without one. */
  deadlineMs: number
}

const MODES: Mode[] = [
  { name: `timeout=${TIMEOUT_MS}`, query: `?timeout=${TIMEOUT_MS}`, deadlineMs: TIMEOUT_MS },
  { name: `no timeout (MAX_TIMEOUT_MS=${MAX_TIMEOUT_MS})`, query: '', deadlineMs: MAX_TIMEOUT_MS }
]

/** When the answer must arrive, in ms after the request was sent. */
type TimeBound =
  | { kind: 'fast' } // every attempt fails at once: well under the hedge delay
  | { kind: 'deadline' } // nothing succeeds: at the mode's deadline
  | { kind: 'after', ms: number } // a success that takes `ms` to come

type Expected =
  | { status: 200, response: unknown }
  | { status: 408 }
  | { status: 502, message: RegExp }

/** What a test can see of the upstream side, whatever kind of server it is. */
interface UpstreamProbe {
  url: string
  /** Requests (HTTP) or connections (plain TCP) the service made. */
  requests (): number
  /** Resolves once every exchange has ended; rejects if that takes longer than `ms`. */
  allEnded (ms: number): Promise<unknown>
  openSockets (): number
  /** Open sockets that are legitimate: keep-alive sockets of exchanges that ended normally. */
  poolable (): number
  /** Further checks of this fault (e.g. that another origin was never called). */
  check? (t: Test): void
  close (): Promise<void>
}

interface Fault {
  name: string
  upstream (): Promise<UpstreamProbe>
  expected: Expected
  time: TimeBound
  /** Upstream requests the service must have made, in either mode; unchecked when undefined. */
  requests?: number
}

function probeScripted (upstream: ScriptedUpstream, check?: (t: Test) => void): UpstreamProbe {
  return {
    url: upstream.url,
    requests: () => upstream.requests.length,
    allEnded: (ms) => upstream.allClosed(ms),
    openSockets: () => upstream.openSockets(),
    poolable: () => upstream.requests.filter((request) => request.abandoned === false).length,
    check,
    close: () => upstream.close()
  }
}

function scripted (script: (n: number) => UpstreamBehaviour): () => Promise<UpstreamProbe> {
  return async () => probeScripted(await startScriptedUpstream(script))
}

function always (behaviour: UpstreamBehaviour): () => Promise<UpstreamProbe> {
  return scripted(() => behaviour)
}

/** A plain TCP upstream (see startSilentUpstream): its connections stand for requests. */
function tcp (reply?: string): () => Promise<UpstreamProbe> {
  return async () => {
    const silent = await startSilentUpstream({ reply })
    return {
      url: silent.url,
      requests: () => silent.connections(),
      allEnded: (ms) => eventually(() => silent.openSockets() === 0, ms),
      openSockets: () => silent.openSockets(),
      poolable: () => 0,
      check: (t) => t.ok(silent.bytesReceived() > 0, 'the service did send its requests'),
      close: () => silent.close()
    }
  }
}

const failedThrice = (detail: string): RegExp => new RegExp(`^Every upstream attempt failed: ${detail}; ${detail}; ${detail}\\.$`)

/** Valid JSON (an empty array padded with spaces) that decodes to `bytes` bytes, from a tiny gzip body. */
const bomb = (bytes: number): string => `[${' '.repeat(bytes - 2)}]`
const BOMB_TEXT = bomb(8 * MAX_BODY_BYTES)
const BIG_BOMB_TEXT = bomb(64 * MAX_BODY_BYTES)
// Compressed now, so that compressing 64 MiB does not stall the scripted upstream during a timed request.
const BOMB_GZIP = gzipOnce(BOMB_TEXT)
gzipOnce(BIG_BOMB_TEXT)

const FAULTS: Fault[] = [
  {
    name: 'delay shorter than the hedge delay',
    upstream: always({ kind: 'json', body: { time: 100 }, delayMs: 100 }),
    expected: { status: 200, response: { time: 100 } },
    time: { kind: 'after', ms: 100 },
    requests: 1
  },
  {
    name: 'delay past the hedge delay (attempt 1 wins, the hedges are aborted)',
    upstream: always({ kind: 'json', body: { time: 400 }, delayMs: 400 }),
    expected: { status: 200, response: { time: 400 } },
    time: { kind: 'after', ms: 400 },
    requests: 3
  },
  {
    name: 'delay past the deadline',
    upstream: always({ kind: 'json', body: { time: 5000 }, delayMs: 5000 }),
    expected: { status: 408 },
    time: { kind: 'deadline' },
    requests: 3
  },
  {
    name: 'hang forever',
    upstream: always({ kind: 'hang' }),
    expected: { status: 408 },
    time: { kind: 'deadline' },
    requests: 3
  },
  ...[500, 503, 404].map((status): Fault => ({
    name: `status ${status}`,
    upstream: always({ kind: 'json', status, body: { error: 'nope' } }),
    expected: { status: 502, message: failedThrice(`status ${status}`) },
    time: { kind: 'fast' },
    requests: 3
  })),
  {
    name: '200 with a body that is not JSON',
    upstream: always({ kind: 'raw', body: '<html>Service temporarily unavailable' }),
    expected: { status: 502, message: failedThrice('body is not JSON') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: '200 with JSON under a non-JSON content type (the body decides)',
    upstream: always({ kind: 'raw', body: '{"time":7}', contentType: 'text/html; charset=utf-8' }),
    expected: { status: 200, response: { time: 7 } },
    time: { kind: 'after', ms: 0 },
    requests: 1
  },
  {
    name: 'headers at once, then a body dripping one byte every 20 ms',
    upstream: always({ kind: 'drip', intervalMs: 20, bytes: 10_000 }),
    expected: { status: 408 },
    time: { kind: 'deadline' },
    requests: 3
  },
  {
    name: 'a 64 MiB body with its content-length',
    upstream: always({ kind: 'huge', bytes: 64 * 1024 * 1024, declareLength: true }),
    expected: { status: 502, message: failedThrice('content-length 67108864') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a 64 MiB body without a content-length',
    upstream: always({ kind: 'huge', bytes: 64 * 1024 * 1024, declareLength: false }),
    expected: { status: 502, message: failedThrice(`over ${MAX_BODY_BYTES} bytes`) },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'connection closed before the headers',
    upstream: always({ kind: 'reset' }),
    expected: { status: 502, message: failedThrice('ECONNRESET') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'connection reset (RST) before the headers',
    upstream: always({ kind: 'reset', hard: true }),
    expected: { status: 502, message: failedThrice('ECONNRESET') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'connection closed after the headers, mid-body',
    upstream: always({ kind: 'reset', afterHeaders: true }),
    expected: { status: 502, message: failedThrice('ECONNRESET') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'connection reset (RST) after the headers, mid-body',
    upstream: always({ kind: 'reset', afterHeaders: true, hard: true }),
    expected: { status: 502, message: failedThrice('ECONNRESET') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'connection refused (a closed port)',
    upstream: async () => {
      const closed = await startScriptedUpstream(() => ({ kind: 'json' }))
      await closed.close()
      return {
        url: closed.url,
        requests: () => 0,
        allEnded: async () => {},
        openSockets: () => 0,
        poolable: () => 0,
        close: async () => {}
      }
    },
    expected: { status: 502, message: failedThrice('ECONNREFUSED') },
    time: { kind: 'fast' }
  },
  {
    name: 'a redirect within the upstream origin is followed',
    upstream: async () => {
      const upstream = await startScriptedUpstream((n) => n === 1 ? { kind: 'redirect', location: '/work/moved' } : { kind: 'json', body: { time: 302 } })
      return probeScripted(upstream, (t) => t.equal(upstream.requests[1]?.url, '/work/moved', 'the second request went to the Location'))
    },
    expected: { status: 200, response: { time: 302 } },
    time: { kind: 'after', ms: 0 },
    requests: 2
  },
  {
    name: 'a redirect loop within the origin stops after 3 redirects',
    upstream: always({ kind: 'redirect', location: '/work/again' }),
    expected: { status: 502, message: failedThrice('ERR_TOO_MANY_REDIRECTS') },
    time: { kind: 'fast' },
    requests: 3 * (1 + 3)
  },
  {
    name: 'a redirect to another origin is not followed',
    upstream: async () => {
      const elsewhere = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 666 } }))
      const upstream = await startScriptedUpstream(() => ({ kind: 'redirect', location: elsewhere.url }))
      const probe = probeScripted(upstream, (t) => t.equal(elsewhere.requests.length, 0, 'the other origin was never called'))
      return {
        ...probe,
        close: async () => {
          await upstream.close()
          await elsewhere.close()
        }
      }
    },
    expected: { status: 502, message: failedThrice('status 302') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a redirect to a malformed URL',
    upstream: always({ kind: 'redirect', location: 'http://[::1' }),
    expected: { status: 502, message: failedThrice('ERR_INVALID_URL') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a redirect to a file: URL is not followed',
    upstream: always({ kind: 'redirect', location: 'file:///etc/passwd' }),
    expected: { status: 502, message: failedThrice('status 302') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a gzip-encoded JSON body is decoded',
    upstream: always({ kind: 'gzip', body: '{"time": 8, "zipped": true}' }),
    expected: { status: 200, response: { time: 8, zipped: true } },
    time: { kind: 'after', ms: 0 },
    requests: 1
  },
  {
    name: 'a gzip body of 8 KiB that inflates to 8 MiB (a gzip bomb) counts its decoded size',
    upstream: always({ kind: 'gzip', body: BOMB_TEXT }),
    expected: { status: 502, message: failedThrice(`over ${MAX_BODY_BYTES} bytes`) },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a gzip body of 64 KiB that inflates to 64 MiB is cut off too',
    upstream: always({ kind: 'gzip', body: BIG_BOMB_TEXT }),
    expected: { status: 502, message: failedThrice(`over ${MAX_BODY_BYTES} bytes`) },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a body labelled gzip that is not compressed',
    upstream: always({ kind: 'gzip', body: '{"time": 9}', mangle: 'plain' }),
    expected: { status: 502, message: failedThrice('Z_[A-Z_]+') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a gzip body cut off halfway',
    upstream: always({ kind: 'gzip', body: JSON.stringify({ pad: 'x'.repeat(10_000), n: Math.PI }), mangle: 'truncated' }),
    expected: { status: 502, message: failedThrice('Z_[A-Z_]+') },
    time: { kind: 'fast' },
    requests: 3
  },
  {
    name: 'a TCP server that accepts the connection and never sends a byte',
    upstream: tcp(),
    expected: { status: 408 },
    time: { kind: 'deadline' },
    requests: 3
  },
  {
    name: 'a TCP server that answers something that is not HTTP, then stays silent',
    upstream: tcp('SSH-2.0-OpenSSH_9.2\r\n\r\n'),
    expected: { status: 502, message: failedThrice('HPE_[A-Z_]+') },
    time: { kind: 'fast' },
    requests: 3
  }
]

const ERROR_NAMES: Record<number, string> = { 408: 'Request Timeout', 502: 'Bad Gateway' }

function checkBody (t: Test, answer: ClientAnswer, expected: Expected, mode: Mode): void {
  t.equal(answer.status, expected.status, `status ${expected.status}`)
  t.match(answer.headers['content-type'], /^application\/json/, 'a JSON answer')
  if (expected.status === 200) {
    t.same(answer.json, { success: true, response: expected.response }, 'the upstream JSON, wrapped')
    return
  }
  const message = expected.status === 408
    ? `No successful upstream answer within the ${mode.deadlineMs} ms timeout.`
    : expected.message
  t.match(answer.json, { success: false, statusCode: expected.status, error: ERROR_NAMES[expected.status], message })
  t.same(Object.keys(answer.json ?? {}).sort(), ['error', 'message', 'statusCode', 'success'], 'the error shape, nothing more')
}

function checkTime (t: Test, elapsedMs: number, time: TimeBound, mode: Mode): void {
  const at = `answered at ${elapsedMs.toFixed(1)} ms`
  switch (time.kind) {
    case 'fast':
      t.ok(elapsedMs < FAST_FAILURE_MS, `${at}, under ${FAST_FAILURE_MS} ms`)
      return
    case 'deadline':
      t.ok(elapsedMs >= mode.deadlineMs - 5 && elapsedMs <= mode.deadlineMs + MARGIN_MS,
        `${at}, the deadline being ${mode.deadlineMs} ms`)
      return
    case 'after':
      t.ok(elapsedMs >= time.ms && elapsedMs <= time.ms + MARGIN_MS, `${at}, the upstream taking ${time.ms} ms`)
  }
}

for (const fault of FAULTS) {
  t.test(fault.name, async (t) => {
    for (const mode of MODES) {
      await t.test(mode.name, async (t) => {
        const { service, upstream } = await withService(t, {
          upstream: await fault.upstream(),
          env: {
            MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
            LOG_LEVEL: 'info',
            // The service shares this process with the upstreams and the test: a lag they cause (building a
            // 64 MiB body) is not the service's overload, and shedding it would answer 503 to these requests.
            OVERLOAD_MAX_WAIT_MS: '0'
          }
        })

        const answer = await call(`${service.url}/api/smart${mode.query}`)
        checkBody(t, answer, fault.expected, mode)
        checkTime(t, answer.elapsedMs, fault.time, mode)
        if (fault.requests !== undefined) t.equal(upstream.requests(), fault.requests, `${fault.requests} upstream requests`)
        upstream.check?.(t)

        await t.resolves(upstream.allEnded(CLOSE_GRACE_MS), `every upstream exchange ended within ${CLOSE_GRACE_MS} ms of the answer`)
        const poolable = upstream.poolable()
        await t.resolves(eventually(() => upstream.openSockets() <= poolable, CLOSE_GRACE_MS),
          `open upstream sockets: at most the ${poolable} keep-alive ones of finished exchanges, within ${CLOSE_GRACE_MS} ms`)

        const summaries = service.logs.filter((line) => line.msg === 'api request')
        t.equal(summaries.length, 1, 'one summary line')
        t.match(summaries, [{ statusCode: fault.expected.status }], 'with the status sent')
        t.same(service.logs.filter((line) => Number(line.level) >= 50), [], 'nothing logged as an error')

        // Closed here to see what it leaves behind; the teardown's close then has nothing left to do.
        await service.app.close()
        await t.resolves(eventually(() => upstream.openSockets() === 0, CLOSE_GRACE_MS), 'no upstream socket left once the service closed')
      })
    }
  })
}

t.test('the gzip bomb is valid JSON and small: only the decoded size makes it fail', async (t) => {
  t.ok(BOMB_GZIP.length < MAX_BODY_BYTES / 64, `${BOMB_GZIP.length} compressed bytes, far under MAX_BODY_BYTES`)
  t.doesNotThrow(() => JSON.parse(BOMB_TEXT))
  const { service, upstream } = await withService(t, {
    script: () => ({ kind: 'gzip', body: BOMB_TEXT }),
    env: { MAX_BODY_BYTES: String(BOMB_TEXT.length), OVERLOAD_MAX_WAIT_MS: '0' }
  })
  const answer = await call(`${service.url}/api/smart?timeout=2000`)
  t.equal(answer.status, 200, 'with a limit as large as its decoded size, the same answer succeeds')
  t.equal(answer.text, `{"success":true,"response":${BOMB_TEXT}}`)
  t.match(upstream.requests[0]?.headers['accept-encoding'], /gzip/, 'the service asks for gzip')
})
