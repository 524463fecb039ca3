import t, { type Test } from 'tap'
import fc from 'fast-check'
import { openConnection, type RawResponse } from './helpers/raw-http.js'
import type { ScriptedUpstream } from './helpers/scripted-upstream.js'
import { call, withService, type ServiceFixture } from './helpers/service.js'
import { TIMEOUT_MESSAGES } from '../routes/api/schema.js'

/**
 * Fuzzed input against the real service over real sockets: whatever a client puts in the query string or
 * the headers of GET /api/smart, the answer is one of the statuses SPEC §2 allows (or 400/431
 * for a request Node's parser refuses as malformed or too large), in JSON, never a 500, and the service stays up.
 * The upstream answers 200 JSON at once, so every accepted request is cheap.
 */

const MAX_TIMEOUT_MS = 2000
/** Statuses of GET /api/smart (SPEC §2; 503 is for overload and shutdown, neither of which happens here). */
const SERVICE_STATUSES = [200, 400, 408, 502]
/** What the service answers, through its clientError handler, for a request Node's HTTP parser refuses. */
const PARSER_STATUSES = [400, 431]
/** The messages of those answers: the parser's error code, or the header limit. */
const PARSER_MESSAGE = /^(Malformed HTTP request \(HPE_[A-Z_]+\)\.|The request line and headers are larger than the server accepts\.)$/
const ALL_MESSAGES = [TIMEOUT_MESSAGES.notInteger, TIMEOUT_MESSAGES.notPositive,
  TIMEOUT_MESSAGES.tooLarge(MAX_TIMEOUT_MS), TIMEOUT_MESSAGES.repeated]
/** A request the fuzzer sends must be answered within this; every accepted one is cheap. */
const ANSWER_LIMIT_MS = MAX_TIMEOUT_MS + 1000
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
/** The path of the scripted upstream's URL: the only target it may be asked for, whatever the query. */
const UPSTREAM_PATH = '/work'
/** got's own headers, and the request id: nothing else may reach the upstream. */
const UPSTREAM_HEADERS = ['accept-encoding', 'connection', 'host', 'user-agent', 'x-attempt', 'x-request-id', 'x-timeout-ms']

interface RawAnswer extends RawResponse {
  /** The body parsed as JSON, or undefined. */
  json: Record<string, unknown> | undefined
}

function parseJson (text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === 'object' && value !== null ? value as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/**
 * Sends `request` as it is, bytes and all, on a new connection, and reads the first response. Node's client
 * would refuse to send most of what the fuzzer makes, so this talks to the socket itself.
 */
async function rawRequest (url: string, request: Buffer): Promise<RawAnswer> {
  const connection = await openConnection(url)
  let timer: NodeJS.Timeout | undefined
  const answer = await new Promise<RawResponse | 'late' | undefined>((resolve) => {
    timer = setTimeout(() => resolve('late'), ANSWER_LIMIT_MS)
    connection.socket.on('data', () => {
      const [first] = connection.received()
      if (first !== undefined) resolve(first)
    })
    // The server may hang up (even with a reset) while a request it refused is still being written;
    // the answer it sent first is what counts.
    connection.responses.then(([first]) => resolve(first))
    connection.socket.write(request)
  })
  clearTimeout(timer)
  connection.socket.destroy()
  if (answer === 'late' || answer === undefined) {
    const why = answer === 'late'
      ? `no answer within ${ANSWER_LIMIT_MS} ms`
      : connection.errors.length > 0 ? 'connection failed' : 'connection closed'
    throw new Error(`${why}; received ${JSON.stringify(connection.raw().slice(0, 300))}`)
  }
  return { ...answer, json: parseJson(answer.body) }
}

async function setup (t: Test): Promise<ServiceFixture<ScriptedUpstream>> {
  return withService(t, {
    script: () => ({ kind: 'json', body: { time: 1 } }),
    env: {
      MAX_TIMEOUT_MS: String(MAX_TIMEOUT_MS),
      // The service shares this process with the fuzzer; a lag the fuzzer causes is not the service's
      // overload, and shedding it would answer 503s that have nothing to do with the input.
      OVERLOAD_MAX_WAIT_MS: '0',
      // One attempt per request: a hedge sent before an answer may still reach the upstream after it (losers are
      // aborted, not recalled), and would be counted against the next fuzzed request. On a busy machine the
      // first attempt of a cold service can take the 300 ms that fire the hedges.
      HEDGE_REQUESTS: '0'
    }
  })
}

/** A GET of `target` (sent as it is) with `headers` (name, value; latin1 on the wire). */
function getRequest (target: Buffer | string, headers: Array<[string, string]> = []): Buffer {
  const head = headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')
  return Buffer.concat([
    Buffer.from('GET ', 'latin1'),
    typeof target === 'string' ? Buffer.from(target, 'latin1') : target,
    Buffer.from(` HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${head}\r\n`, 'latin1')
  ])
}

/** The checks every answer must pass, whoever wrote it; returns a reason when it fails, for fast-check. */
function answerProblem (answer: RawAnswer): string | undefined {
  if (answer.status === 500) return 'a 500'
  if (answer.json === undefined) return `a body that is not JSON: ${answer.body.slice(0, 200)}`
  if (!/^application\/json/.test(answer.headers['content-type'] ?? '')) return `content-type ${answer.headers['content-type']}`
  if (!SERVICE_STATUSES.includes(answer.status) && !PARSER_STATUSES.includes(answer.status)) return `status ${answer.status}`
  if (answer.status === 200) return answer.json.success === true ? undefined : 'a 200 without success: true'
  const { success, statusCode, error, message } = answer.json
  if (success !== false || statusCode !== answer.status || typeof error !== 'string' || typeof message !== 'string') {
    return `an error body of the wrong shape: ${answer.body}`
  }
  const known = ALL_MESSAGES.includes(message) || (PARSER_STATUSES.includes(answer.status) && PARSER_MESSAGE.test(message))
  if ([400, 431].includes(answer.status) && !known) return `a ${answer.status} with an unknown message: ${message}`
  return undefined
}

function assertAnswer (answer: RawAnswer, context: string): void {
  const problem = answerProblem(answer)
  if (problem !== undefined) throw new Error(`${context}: ${problem}`)
}

async function assertStillUp (t: Test, fixture: ServiceFixture<ScriptedUpstream>): Promise<void> {
  const answer = await call(`${fixture.service.url}/api/smart?timeout=1000`)
  t.equal(answer.status, 200, 'a normal request still gets 200 afterwards')
  t.same(answer.json, { success: true, response: { time: 1 } })
}

/** Percent-encodes the UTF-8 bytes of `text`, leaving only unreserved characters as they are. */
function percentEncode (text: string): string {
  let out = ''
  for (const byte of Buffer.from(text, 'utf8')) {
    const char = String.fromCharCode(byte)
    out += /[A-Za-z0-9._~-]/.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

/** What the server decodes `text` to: its UTF-8 bytes, read back (a lone surrogate becomes U+FFFD). */
function wellFormed (text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8')
}

/** The message SPEC §2 gives a single `timeout` value, or undefined when it is valid. */
function expectedTimeoutMessage (value: string): string | undefined {
  if (!/^-?[0-9]+$/.test(value)) return TIMEOUT_MESSAGES.notInteger
  if (value.startsWith('-') || /^0+$/.test(value)) return TIMEOUT_MESSAGES.notPositive
  if (BigInt(value) > BigInt(MAX_TIMEOUT_MS)) return TIMEOUT_MESSAGES.tooLarge(MAX_TIMEOUT_MS)
  return undefined
}

const DIGIT_SETS = [
  '0123456789',
  '٠١٢٣٤٥٦٧٨٩', // Arabic-Indic
  '۰۱۲۳۴۵۶۷۸۹', // extended Arabic-Indic (Persian)
  '０１２３４５６７８９', // full-width
  '०१२३४५६७८९', // Devanagari
  '𝟎𝟏𝟐𝟑𝟒𝟓𝟔𝟕𝟖𝟗' // mathematical bold (outside the BMP)
]

const asciiDigits = (maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength: 1, maxLength })

/** Digits of any script, mixed with ASCII ones: all "not an integer" unless every one is ASCII. */
const unicodeDigits = fc.array(fc.constantFrom(...DIGIT_SETS), { minLength: 1, maxLength: 6 })
  .chain((sets) => fc.tuple(...sets.map((set) => fc.constantFrom(...Array.from(set)))))
  .map((digits) => digits.join(''))

/** Values of `timeout`: valid ones, near misses, other scripts' digits, huge ones, and anything at all. */
const timeoutValue: fc.Arbitrary<string> = fc.oneof(
  fc.integer({ min: 1, max: MAX_TIMEOUT_MS }).map(String),
  fc.integer({ min: -10, max: 3 * MAX_TIMEOUT_MS }).map(String),
  fc.tuple(fc.string({ unit: fc.constant('0'), maxLength: 300 }), asciiDigits(6)).map(([zeros, digits]) => zeros + digits),
  asciiDigits(400), // far above the maximum, or (rarely) leading zeros
  fc.tuple(fc.constantFrom('-', '+', ' ', '\t', '.', 'e', '0x', '-0'), asciiDigits(5), fc.constantFrom('', ' ', '.5', 'e3', 'abc', '\n', '\u0000'))
    .map(([prefix, digits, suffix]) => prefix + digits + suffix),
  unicodeDigits,
  fc.constantFrom('', '0', '00', '-0', '1e3', '0x10', '0b1', '0o7', 'Infinity', 'NaN', '1n', '1_000', '1,000', '١٠٠',
    '１０００', '1.0', '٫', '\u00a0100', '100\u200b', String(MAX_TIMEOUT_MS), String(MAX_TIMEOUT_MS + 1)),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 })
)

/** Other parameters: names that mean nothing to the service, a few that look like they might. */
const otherName: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('Timeout', 'TIMEOUT', 'timeout[]', 'timeout[0]', 'timeout.x', ' timeout', 'timeout ', '__proto__',
    'constructor', 'prototype', 'hasOwnProperty', 'toString', 'pop', 'push', 'url', 'upstream', 'UPSTREAM_URL', ''),
  fc.string({ unit: 'binary', maxLength: 20 }).filter((name) => wellFormed(name) !== 'timeout')
)

interface QueryParameter {
  name: string
  value: string
  /** `name` alone, without "=": its value is the empty string. */
  bare: boolean
}

const parameter = (name: fc.Arbitrary<string>): fc.Arbitrary<QueryParameter> =>
  fc.record({ name, value: timeoutValue, bare: fc.boolean() }).map((p) => p.bare ? { ...p, value: '' } : p)

/** 0 to 3 `timeout` parameters among other ones, in any order, with empty segments here and there. */
const queryParameters: fc.Arbitrary<{ parameters: QueryParameter[], emptySegments: number[] }> = fc.record({
  parameters: fc.tuple(fc.array(parameter(fc.constant('timeout')), { maxLength: 3 }), fc.array(parameter(otherName), { maxLength: 4 }))
    .chain(([timeouts, others]) => fc.shuffledSubarray([...timeouts, ...others], { minLength: timeouts.length + others.length })),
  emptySegments: fc.array(fc.nat(8), { maxLength: 3 })
})

function queryString ({ parameters, emptySegments }: { parameters: QueryParameter[], emptySegments: number[] }): string {
  const segments = parameters.map(({ name, value, bare }) => bare ? percentEncode(name) : `${percentEncode(name)}=${percentEncode(value)}`)
  for (const at of emptySegments) segments.splice(Math.min(at, segments.length), 0, '')
  return segments.join('&')
}

t.test('fuzzed query strings: only the allowed answers, and timeout validation exactly as SPEC §2 says', async (t) => {
  const fixture = await setup(t)
  let accepted = 0
  await fc.assert(fc.asyncProperty(queryParameters, async (query) => {
    const target = `/api/smart?${queryString(query)}`
    const before = fixture.upstream.requests.length
    const answer = await rawRequest(fixture.service.url, getRequest(target))
    assertAnswer(answer, target)
    const timeouts = query.parameters.filter((p) => p.name === 'timeout').map((p) => wellFormed(p.value))
    const [only] = timeouts
    const message = timeouts.length > 1
      ? TIMEOUT_MESSAGES.repeated
      : only === undefined ? undefined : expectedTimeoutMessage(only)
    if (message === undefined) {
      if (answer.status === 400) throw new Error(`${target}: a valid request answered 400 (${answer.body})`)
      accepted++
    } else {
      if (answer.status !== 400 || answer.json?.message !== message) {
        throw new Error(`${target}: expected 400 "${message}", got ${answer.status} ${answer.body}`)
      }
      if (fixture.upstream.requests.length !== before) throw new Error(`${target}: a 400 made an upstream request`)
    }
    for (const request of fixture.upstream.requests.slice(before)) {
      if (request.url !== UPSTREAM_PATH) throw new Error(`${target}: the upstream was asked for ${request.url}`)
    }
  }), { numRuns: 400 })
  t.ok(accepted > 20, `${accepted} of the fuzzed requests were valid, and none of them answered 400`)
  t.pass('400 fuzzed query strings answered as SPEC §2 says')
  await assertStillUp(t, fixture)
})

t.test('any single timeout: ^[0-9]+$ within 1..MAX is never 400, anything else is always 400', async (t) => {
  const fixture = await setup(t)
  await fc.assert(fc.asyncProperty(timeoutValue, async (value) => {
    const target = `/api/smart?timeout=${percentEncode(value)}`
    const answer = await rawRequest(fixture.service.url, getRequest(target))
    assertAnswer(answer, target)
    const decoded = wellFormed(value)
    const valid = /^[0-9]+$/.test(decoded) && BigInt(decoded) >= 1n && BigInt(decoded) <= BigInt(MAX_TIMEOUT_MS)
    if (valid && answer.status === 400) throw new Error(`${target}: a valid timeout answered 400 (${answer.body})`)
    if (!valid && (answer.status !== 400 || !ALL_MESSAGES.includes(String(answer.json?.message)))) {
      throw new Error(`${target}: an invalid timeout answered ${answer.status} ${answer.body}`)
    }
  }), { numRuns: 400 })
  t.pass('400 fuzzed timeout values classified as SPEC §2 says')
  await assertStillUp(t, fixture)
})

/** Bytes for a request target: anything at all, printable ASCII, or Latin-1 and UTF-8 text. */
const rawTargetBytes: fc.Arbitrary<Buffer> = fc.oneof(
  fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)),
  fc.string({ unit: fc.integer({ min: 0x21, max: 0x7e }).map((code) => String.fromCharCode(code)), maxLength: 200 })
    .map((text) => Buffer.from(text, 'latin1')),
  fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).map((code) => String.fromCharCode(code)), maxLength: 200 })
    .map((text) => Buffer.from(text, 'latin1')),
  fc.string({ unit: 'binary', maxLength: 60 }).map((text) => Buffer.from(`timeout=${text}`, 'utf8'))
)

t.test('raw bytes in the request line: never a 500, the service stays up', async (t) => {
  const fixture = await setup(t)
  const statuses = new Map<number, number>()
  await fc.assert(fc.asyncProperty(rawTargetBytes, async (bytes) => {
    const answer = await rawRequest(fixture.service.url, getRequest(Buffer.concat([Buffer.from('/api/smart?'), bytes])))
    assertAnswer(answer, `GET /api/smart?${JSON.stringify(bytes.toString('latin1'))}`)
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
  }), { numRuns: 300 })
  t.pass(`statuses seen: ${JSON.stringify(Object.fromEntries(statuses))}`)
  await assertStillUp(t, fixture)
})

t.test('oversize and huge input: Node refuses what is over its limits, the service answers the rest', async (t) => {
  const fixture = await setup(t)
  const send = (target: string, headers: Array<[string, string]> = []): Promise<RawAnswer> =>
    rawRequest(fixture.service.url, getRequest(target, headers))
  const cases: Array<{ name: string, target: string, headers?: Array<[string, string]>, status: number[], message?: string }> = [
    { name: 'a 64 KiB query string', target: `/api/smart?pad=${'a'.repeat(64 * 1024)}`, status: [431, 400] },
    { name: 'a 64 KiB timeout', target: `/api/smart?timeout=${'9'.repeat(64 * 1024)}`, status: [431, 400] },
    { name: 'a 64 KiB header', target: '/api/smart?timeout=1000', headers: [['x-pad', 'a'.repeat(64 * 1024)]], status: [431, 400] },
    // Node counts the bytes of names and values against its 16 KiB limit.
    { name: '1500 headers, 30 KiB in all', target: '/api/smart?timeout=1000', headers: Array.from({ length: 1500 }, (_, i): [string, string] => [`x-h${i}`, 'v'.repeat(15)]), status: [431, 400] },
    { name: 'a 15 KiB header, under the limit', target: '/api/smart?timeout=1000', headers: [['x-pad', 'a'.repeat(15 * 1024)]], status: [200] },
    { name: 'a 15 KiB query string, under the limit', target: `/api/smart?timeout=1000&pad=${'a'.repeat(15 * 1024)}`, status: [200] },
    { name: 'a 10 KiB timeout of digits', target: `/api/smart?timeout=${'9'.repeat(10 * 1024)}`, status: [400], message: TIMEOUT_MESSAGES.tooLarge(MAX_TIMEOUT_MS) },
    { name: '10 KiB of zeros, then 1: a valid timeout of 1 ms', target: `/api/smart?timeout=${'0'.repeat(10 * 1024)}1`, status: [200, 408] },
    { name: '10 KiB of zeros, then 2001', target: `/api/smart?timeout=${'0'.repeat(10 * 1024)}2001`, status: [400], message: TIMEOUT_MESSAGES.tooLarge(MAX_TIMEOUT_MS) },
    { name: '10 KiB of zeros', target: `/api/smart?timeout=${'0'.repeat(10 * 1024)}`, status: [400], message: TIMEOUT_MESSAGES.notPositive },
    { name: '1000 parameters', target: `/api/smart?${Array.from({ length: 1000 }, (_, i) => `p${i}=${i}`).join('&')}&timeout=1000`, status: [200] },
    { name: '1000 timeout parameters', target: `/api/smart?${'timeout=1&'.repeat(1000)}`, status: [400], message: TIMEOUT_MESSAGES.repeated },
    { name: '5000 empty segments', target: `/api/smart?${'&'.repeat(5000)}timeout=1000${'&'.repeat(5000)}`, status: [200] }
  ]
  for (const { name, target, headers, status, message } of cases) {
    const answer = await send(target, headers)
    t.equal(answerProblem(answer), undefined, `${name}: a proper answer`)
    t.ok(status.includes(answer.status), `${name}: status ${answer.status}, one of ${status.join('/')}`)
    if (message !== undefined) t.equal(answer.json?.message, message, `${name}: "${message}"`)
  }
  await assertStillUp(t, fixture)
})

/** tchar of RFC 9110: the characters a header name may have. */
const TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
/**
 * Headers that change how the request is framed or handled by Node; the request id is sent on its own, and
 * x-timeout-ms is validated like `timeout` (test/routes/api/deadline-protocol.test.ts).
 */
const FRAMING = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'expect', 'upgrade', 'x-request-id', 'x-timeout-ms'])
/** Headers a careless proxy would pass on, and some that name things the service has. */
const TEMPTING = ['authorization', 'proxy-authorization', 'cookie', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto',
  'forwarded', 'x-real-ip', 'via', 'referer', 'origin', 'user-agent', 'accept', 'accept-encoding', 'range', 'if-none-match',
  'cache-control', 'x-upstream-url', 'x-original-url', 'x-rewrite-url', 'x-http-method-override', 'max-forwards', 'timeout', 'x-timeout', 'x-attempt']

const headerName: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: fc.constantFrom(...TCHAR), minLength: 1, maxLength: 40 }),
  fc.mixedCase(fc.constantFrom(...TEMPTING))
).filter((name) => !FRAMING.has(name.toLowerCase()))

/** field-value characters: visible ASCII, obs-text (0x80-0xFF), space and tab. */
const headerValue: fc.Arbitrary<string> = fc.string({
  unit: fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }), fc.constant(0x09))
    .map((code) => String.fromCharCode(code)),
  maxLength: 200
})

const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

const requestIdValue: fc.Arbitrary<string> = fc.oneof(
  fc.stringMatching(ACCEPTABLE_REQUEST_ID),
  fc.string({ unit: fc.constantFrom(...'ABCabc019._:-'), minLength: 129, maxLength: 300 }),
  fc.stringMatching(ACCEPTABLE_REQUEST_ID).map((id) => ` ${id}\t`),
  headerValue
)

const fuzzedHeaders = fc.record({
  headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 15 }),
  requestId: fc.option(fc.tuple(fc.mixedCase(fc.constant('x-request-id')), requestIdValue), { nil: undefined }),
  query: fc.constantFrom('', '?timeout=1000', `?timeout=${MAX_TIMEOUT_MS}`)
})

t.test('fuzzed headers: answered 200, the request id validated, and nothing else reaches the upstream', async (t) => {
  const fixture = await setup(t)
  await assertStillUp(t, fixture)
  // The time left differs from request to request; it is checked on its own.
  const { 'x-request-id': baselineId, 'x-timeout-ms': baselineLeft, ...baseline } = fixture.upstream.requests[0]?.headers ?? {}
  t.match(baselineLeft, /^[0-9]+$/)
  t.match(baselineId, UUID, 'a plain request gets a generated id')
  t.same(Object.keys(baseline).sort(), UPSTREAM_HEADERS.filter((name) => name !== 'x-request-id' && name !== 'x-timeout-ms'),
    "got's own headers and the deadline protocol's only")
  t.equal(baseline['x-attempt'], '1')
  await fc.assert(fc.asyncProperty(fuzzedHeaders, async ({ headers, requestId, query }) => {
    const sent = requestId === undefined ? headers : [...headers, requestId]
    const before = fixture.upstream.requests.length
    const answer = await rawRequest(fixture.service.url, getRequest(`/api/smart${query}`, sent))
    const context = JSON.stringify(sent)
    assertAnswer(answer, context)
    if (answer.status !== 200) throw new Error(`${context}: status ${answer.status} ${answer.body}`)
    const trimmed = requestId?.[1].replace(/^[ \t]+|[ \t]+$/g, '')
    const id = answer.headers['x-request-id'] ?? ''
    if (trimmed !== undefined && ACCEPTABLE_REQUEST_ID.test(trimmed) ? id !== trimmed : !UUID.test(id)) {
      throw new Error(`${context}: answered with request id ${JSON.stringify(id)}`)
    }
    const forwarded = fixture.upstream.requests.slice(before)
    if (forwarded.length !== 1) throw new Error(`${context}: ${forwarded.length} upstream requests`)
    const { 'x-request-id': upstreamId, 'x-timeout-ms': left, ...rest } = forwarded[0]?.headers ?? {}
    if (upstreamId !== id) throw new Error(`${context}: the upstream got request id ${JSON.stringify(upstreamId)}, not ${id}`)
    const budgetMs = query === '?timeout=1000' ? 1000 : MAX_TIMEOUT_MS
    if (!(typeof left === 'string' && /^[0-9]+$/.test(left) && Number(left) <= budgetMs && Number(left) > budgetMs - 1000)) {
      throw new Error(`${context}: the upstream was told x-timeout-ms ${JSON.stringify(left)} of ${budgetMs}`)
    }
    if (JSON.stringify(rest) !== JSON.stringify(baseline)) {
      throw new Error(`${context}: the upstream got other headers: ${JSON.stringify(rest)}`)
    }
    if (forwarded[0]?.url !== UPSTREAM_PATH) throw new Error(`${context}: the upstream was asked for ${forwarded[0]?.url}`)
  }), { numRuns: 200 })
  t.pass('200 fuzzed header sets: only the validated request id reached the upstream')
  await assertStillUp(t, fixture)
})

/** Header lines made of any bytes at all: CR, LF, NUL, colons and non-token characters in names and values. */
const rawHeaderBytes: fc.Arbitrary<Buffer> = fc.array(
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 40 }), fc.uint8Array({ maxLength: 120 }))
    .map(([name, value]) => Buffer.concat([Buffer.from(name), Buffer.from(': '), Buffer.from(value), Buffer.from('\r\n')])),
  { minLength: 1, maxLength: 5 }
).map((lines) => Buffer.concat(lines))

t.test('raw bytes in the headers: 200, or a JSON 400/431 from the parser; never a 500, the service stays up', async (t) => {
  const fixture = await setup(t)
  const statuses = new Map<number, number>()
  await fc.assert(fc.asyncProperty(rawHeaderBytes, async (headerBytes) => {
    const request = Buffer.concat([
      Buffer.from('GET /api/smart?timeout=1000 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n', 'latin1'),
      headerBytes,
      Buffer.from('\r\n', 'latin1')
    ])
    const answer = await rawRequest(fixture.service.url, request)
    const context = JSON.stringify(headerBytes.toString('latin1'))
    assertAnswer(answer, context)
    if (![200, 400, 431].includes(answer.status)) throw new Error(`${context}: status ${answer.status}`)
    statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
  }), { numRuns: 300 })
  t.pass(`statuses seen: ${JSON.stringify(Object.fromEntries(statuses))}`)
  await assertStillUp(t, fixture)
})

/** A body for a method /api/smart does not support: well-formed, malformed, of an unknown type, too large. */
const unsupportedBody = fc.record({
  method: fc.constantFrom('POST', 'PUT', 'PATCH', 'DELETE'),
  contentType: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/x-unknown'),
  body: fc.oneof(fc.constantFrom('{"timeout": 1000}', '{bad', '', 'x'.repeat(2 * 1024 * 1024)), fc.string({ maxLength: 100 }))
})

t.test('other methods answer JSON 405 whatever body they carry (SPEC §2)', async (t) => {
  const fixture = await setup(t)
  await fc.assert(fc.asyncProperty(unsupportedBody, async ({ method, contentType, body }) => {
    const bytes = Buffer.from(body, 'utf8')
    const request = Buffer.concat([Buffer.from(`${method} /api/smart HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n` +
      `Content-Type: ${contentType}\r\nContent-Length: ${bytes.length}\r\n\r\n`, 'latin1'), bytes])
    const answer = await rawRequest(fixture.service.url, request)
    const context = `${method} with ${contentType} ${JSON.stringify(body.slice(0, 40))} (${bytes.length} bytes)`
    if (answer.status !== 405 || answer.json?.success !== false || answer.headers.allow !== 'GET, HEAD') {
      throw new Error(`${context}: answered ${answer.status} ${answer.body.slice(0, 200)}`)
    }
  }), { numRuns: 60 })
  t.equal(fixture.upstream.requests.length, 0, 'no upstream request for any of them')
})
