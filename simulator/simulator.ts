/**
 * A stand-in for the flaky upstream "work" API (SPEC §1): `GET <any path>` answers `200 {"time": <ms>}` after a
 * random delay, except when it answers 500, answers 200 with a body that is not JSON, or never answers at all.
 *
 * The randomness comes from a seeded PRNG, and every work request draws its whole fate the moment it arrives,
 * so the N-th request always gets the same outcome and delay for a given seed, however the answers interleave.
 * `GET /health` draws nothing, so container health checks do not shift that sequence.
 *
 * It speaks the deadline protocol (SPEC §2): a work request that carries `x-timeout-ms` is never worked on past it.
 * If its answer would come later (or never), the simulator gives up at that time with a 504 and says so in its log.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { ATTEMPT_HEADER, LARGEST_TIMER_MS, REQUEST_ID_HEADER, TIMEOUT_HEADER } from '../lib/constants.js'

export interface SimulatorProfile {
  minDelayMs: number
  maxDelayMs: number
  /** Share of work requests answered 500. */
  errorRate: number
  /** Share of work requests answered 200 with a body that is not JSON. */
  invalidJsonRate: number
  /** Share of work requests never answered. */
  hangRate: number
  /**
   * Work requests in progress at once; one that arrives beyond it is answered 503 with `Retry-After: 1` at once, as
   * an overloaded server sheds load. Unlimited when absent.
   */
  capacity?: number
}

/** The upstream as SPEC §1 describes it. */
export const DEFAULT_PROFILE: SimulatorProfile = Object.freeze({
  minDelayMs: 100,
  maxDelayMs: 600,
  errorRate: 0.1,
  invalidJsonRate: 0.1,
  hangRate: 0.05
})

/** The profiles SIMULATOR_PROFILE names: the upstream of SPEC §1, slower, faster, and overloaded. */
export const SIMULATOR_PROFILES = Object.freeze({
  exponea: DEFAULT_PROFILE,
  slow: Object.freeze({ ...DEFAULT_PROFILE, minDelayMs: 200, maxDelayMs: 1200 }),
  fast: Object.freeze({ ...DEFAULT_PROFILE, minDelayMs: 20, maxDelayMs: 120 }),
  overloaded: Object.freeze({ ...DEFAULT_PROFILE, capacity: 32 })
})
export type SimulatorProfileName = keyof typeof SIMULATOR_PROFILES

/** Used when no seed is given, so that two runs without options behave the same. */
export const DEFAULT_SEED = 42

/** mulberry32 works on 32-bit state, so larger seeds would silently alias smaller ones. */
export const LARGEST_SEED = 0xFFFF_FFFF

/** Lets shares such as 0.1 + 0.2 + 0.7 add up to 1 despite floating-point rounding. */
const SHARE_TOLERANCE = 1e-9

export interface SimulatorOptions {
  seed?: number
  host?: string
  port?: number
  profile?: Partial<SimulatorProfile>
  /** Where the simulator reports work it gave up at a caller's deadline, one line each (nowhere by default). */
  log?: (line: string) => void
}

export interface RunningSimulator {
  /** Where to send work requests, e.g. 'http://127.0.0.1:40123/'. */
  url: string
  /** Stops accepting, drops every open connection (hanging requests too) and every pending timer. */
  close(): Promise<void>
}

type Outcome = 'ok' | 'error' | 'invalid-json' | 'hang'

interface PlannedAnswer {
  outcome: Outcome
  delayMs: number
}

/** A tiny, well-known 32-bit PRNG: good enough spread for a simulator, and identical on every platform. */
function mulberry32 (seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let mixed = state
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1)
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61)
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296
  }
}

function assertShare (name: keyof SimulatorProfile, value: number): void {
  if (!(value >= 0 && value <= 1)) {
    throw new RangeError(`simulator profile: ${name} must be between 0 and 1, got ${value}`)
  }
}

/** Fills in defaults and rejects profiles that cannot describe a sequence of answers. */
function resolveProfile (overrides: Partial<SimulatorProfile>): SimulatorProfile {
  const profile: SimulatorProfile = { ...DEFAULT_PROFILE, ...overrides }
  const { minDelayMs, maxDelayMs } = profile
  if (!Number.isInteger(minDelayMs) || minDelayMs < 0) {
    throw new RangeError(`simulator profile: minDelayMs must be a non-negative integer, got ${minDelayMs}`)
  }
  if (!Number.isInteger(maxDelayMs) || maxDelayMs < minDelayMs || maxDelayMs > LARGEST_TIMER_MS) {
    throw new RangeError(
      `simulator profile: maxDelayMs must be an integer from minDelayMs to ${LARGEST_TIMER_MS}, got ${maxDelayMs}`
    )
  }
  assertShare('errorRate', profile.errorRate)
  assertShare('invalidJsonRate', profile.invalidJsonRate)
  assertShare('hangRate', profile.hangRate)
  const { capacity } = profile
  if (capacity !== undefined && !(Number.isInteger(capacity) && capacity >= 0)) {
    throw new RangeError(`simulator profile: capacity must be a non-negative integer, got ${capacity}`)
  }
  const failureShare = profile.errorRate + profile.invalidJsonRate + profile.hangRate
  if (failureShare > 1 + SHARE_TOLERANCE) {
    throw new RangeError(`simulator profile: errorRate + invalidJsonRate + hangRate must not exceed 1, got ${failureShare}`)
  }
  return profile
}

function resolveSeed (seed: number): number {
  if (!Number.isInteger(seed) || seed < 0 || seed > LARGEST_SEED) {
    throw new RangeError(`simulator seed must be an integer from 0 to ${LARGEST_SEED}, got ${seed}`)
  }
  return seed
}

/**
 * Returns a function that decides the fate of the next work request. It always draws exactly two numbers,
 * one for the outcome and one for the delay, so one request's outcome never changes how later ones are drawn.
 */
function createPlanner (seed: number, profile: SimulatorProfile): () => PlannedAnswer {
  const random = mulberry32(seed)
  const delaySpan = profile.maxDelayMs - profile.minDelayMs + 1
  return () => {
    const outcomeRoll = random()
    const delayMs = profile.minDelayMs + Math.floor(random() * delaySpan)
    return { outcome: pickOutcome(outcomeRoll, profile), delayMs }
  }
}

/** Splits [0, 1) into consecutive bands, one per failure kind, with success taking what is left. */
function pickOutcome (roll: number, profile: SimulatorProfile): Outcome {
  let bandEnd = profile.hangRate
  if (roll < bandEnd) return 'hang'
  bandEnd += profile.errorRate
  if (roll < bandEnd) return 'error'
  bandEnd += profile.invalidJsonRate
  if (roll < bandEnd) return 'invalid-json'
  return 'ok'
}

function sendBody (response: ServerResponse, statusCode: number, body: string): void {
  response.writeHead(statusCode, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body)
  })
  response.end(body)
}

function sendJson (response: ServerResponse, statusCode: number, payload: object): void {
  sendBody(response, statusCode, JSON.stringify(payload))
}

function answer (response: ServerResponse, planned: PlannedAnswer): void {
  switch (planned.outcome) {
    case 'ok':
      sendJson(response, 200, { time: planned.delayMs })
      break
    case 'error':
      sendJson(response, 500, { error: 'Internal Server Error', message: 'simulated upstream failure' })
      break
    default:
      // Claims to be JSON but is cut off: a client must not trust the content-type alone.
      sendBody(response, 200, `{"time": ${planned.delayMs}`)
  }
}

function isHealthCheck (request: IncomingMessage): boolean {
  // A request that reached a server always has a url; only client-side messages lack one.
  const path = (request.url as string).split('?')[0]
  return path === '/health'
}

/** The caller's deadline (SPEC §2's deadline protocol), in ms from now; undefined when it sent none readable. */
function callerDeadlineMs (request: IncomingMessage): number | undefined {
  const header = request.headers[TIMEOUT_HEADER]
  return typeof header === 'string' && /^[0-9]+$/.test(header) ? Number(header) : undefined
}

/** Answers at the caller's deadline instead of working past it. */
function giveUp (request: IncomingMessage, response: ServerResponse, timeoutMs: number, log: (line: string) => void): void {
  const { [REQUEST_ID_HEADER]: requestId = '-', [ATTEMPT_HEADER]: attempt = '-' } = request.headers
  log(`gave up at the caller's deadline: x-timeout-ms ${timeoutMs}, x-request-id ${String(requestId)}, x-attempt ${String(attempt)}`)
  sendJson(response, 504, { error: 'Gateway Timeout', message: `gave up at the caller's deadline (x-timeout-ms ${timeoutMs})` })
}

interface HandlerOptions {
  planNext: () => PlannedAnswer
  /** Every timer scheduled and not yet fired, for close(). */
  pendingTimers: Set<NodeJS.Timeout>
  capacity: number
  log: (line: string) => void
}

function createHandler ({ planNext, pendingTimers, capacity, log }: HandlerOptions): RequestListener {
  let inProgress = 0
  return (request, response) => {
    if (request.method !== 'GET') {
      response.setHeader('allow', 'GET')
      sendJson(response, 405, { error: 'Method Not Allowed', message: 'the simulator only answers GET' })
      return
    }
    if (isHealthCheck(request)) {
      sendJson(response, 200, { status: 'ok' })
      return
    }
    const planned = planNext()
    if (inProgress >= capacity) {
      response.setHeader('retry-after', '1')
      sendJson(response, 503, { error: 'Service Unavailable', message: `simulated overload: more than ${capacity} requests in progress` })
      return
    }
    inProgress++
    const deadlineMs = callerDeadlineMs(request)
    const givesUp = deadlineMs !== undefined && (planned.outcome === 'hang' || planned.delayMs > deadlineMs)
    // Without a deadline, a hanging request holds its socket open until the client leaves or close() destroys it.
    const timer = planned.outcome === 'hang' && !givesUp
      ? undefined
      : setTimeout(() => {
        pendingTimers.delete(timer as NodeJS.Timeout)
        if (givesUp) giveUp(request, response, deadlineMs, log)
        else answer(response, planned)
      }, givesUp ? deadlineMs : planned.delayMs)
    if (timer !== undefined) pendingTimers.add(timer)
    // 'close' also fires when the client goes away first: nothing should keep working for a gone client.
    response.once('close', () => {
      inProgress--
      clearTimeout(timer)
      if (timer !== undefined) pendingTimers.delete(timer)
    })
  }
}

function listen (server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve(server.address() as AddressInfo)
    })
  })
}

function urlOf (address: AddressInfo): string {
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  return `http://${host}:${address.port}/`
}

function createCloser (server: Server, pendingTimers: Set<NodeJS.Timeout>): () => Promise<void> {
  let closing: Promise<void> | undefined
  return () => {
    closing ??= new Promise((resolve) => {
      server.close(() => resolve())
      // close() alone waits for active connections, and a hanging request is active forever.
      server.closeAllConnections()
      for (const timer of pendingTimers) clearTimeout(timer)
      pendingTimers.clear()
    })
    return closing
  }
}

export async function startSimulator (options: SimulatorOptions = {}): Promise<RunningSimulator> {
  const seed = resolveSeed(options.seed ?? DEFAULT_SEED)
  const profile = resolveProfile(options.profile ?? {})
  const pendingTimers = new Set<NodeJS.Timeout>()
  const server = createServer(createHandler({
    planNext: createPlanner(seed, profile),
    pendingTimers,
    capacity: profile.capacity ?? Number.POSITIVE_INFINITY,
    log: options.log ?? (() => {})
  }))
  const address = await listen(server, options.port ?? 0, options.host ?? '127.0.0.1')
  return { url: urlOf(address), close: createCloser(server, pendingTimers) }
}
