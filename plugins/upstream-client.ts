import fp from 'fastify-plugin'
import got, { Options, TimeoutError, type PlainResponse, type Request, type RequestError } from 'got'
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import type { AttemptOutcome } from '../lib/call-engine.js'
import { startSimulator } from '../simulator/simulator.js'
import { REQUEST_ID_HEADER } from './request-id.js'

/** Why one upstream attempt did not produce a usable answer. */
export type AttemptFailure =
  | 'http_error' // a status other than 200
  | 'invalid_json' // 200, but the body does not parse as JSON
  | 'too_large' // the body is over MAX_BODY_BYTES
  | 'connection_error' // refused, reset, DNS, broken stream
  | 'timeout' // the attempt's own time limit passed
  | 'aborted' // the caller aborted it (another attempt won, deadline, client gone)

/** A successful attempt carries the upstream's JSON text, passed on byte for byte. */
export type UpstreamAttempt = AttemptOutcome<string, AttemptFailure>

export interface UpstreamClient {
  /** The endpoint every attempt calls. */
  readonly url: string
  /**
   * One GET to the upstream, stopped by `signal` or after `timeoutMs`; never rejects. While all
   * `maxSockets` connections are busy, the attempt waits for one, and its signal and time limit still apply.
   */
  attempt (signal: AbortSignal, timeoutMs: number, requestId: string): Promise<UpstreamAttempt>
}

export interface UpstreamClientOptions {
  /** Largest body accepted (MAX_BODY_BYTES). */
  maxBodyBytes: number
  /** Upstream connections open at once, idle ones included (UPSTREAM_MAX_SOCKETS). */
  maxSockets: number
}

declare module 'fastify' {
  interface FastifyInstance {
    upstream: UpstreamClient
  }
}

/** At most this many redirects, and only to the upstream's own origin. */
const MAX_REDIRECTS = 3

function failure (reason: AttemptFailure, detail: string): UpstreamAttempt {
  return { ok: false, reason, detail }
}

function aborted (signal: AbortSignal): UpstreamAttempt {
  return failure('aborted', String(signal.reason))
}

function ignoreError (): void {}

/**
 * An aborted attempt's connection is reset (RST) rather than closed (FIN): the upstream learns at once that
 * nobody is waiting, and no TIME_WAIT socket stays behind here. Under load, tens of thousands of TIME_WAIT
 * sockets towards one upstream address make every new connect() search long for a free local port.
 *
 * node:http reports every connection dropped before an answer as a 'socket hang up' error of the
 * ClientRequest, and got turns each into a RequestError with both stack traces formatted: about 30 µs of
 * an aborted attempt's 200, for an outcome already known. got's own listeners are detached first (got has
 * nothing left to do for a destroyed request; it cancels its timers in destroy()), one that ignores the
 * error stays, as a ClientRequest must not emit an unheard 'error'.
 */
function resetAndDestroy (stream: Request, clientRequest: ClientRequest | undefined): void {
  clientRequest?.removeAllListeners('error').on('error', ignoreError)
  stream.socket?.resetAndDestroy()
  stream.destroy()
}

/** got wraps every transport failure in a RequestError; its code says what happened (ECONNRESET, ...). */
function classifyError (error: unknown): UpstreamAttempt {
  if (error instanceof TimeoutError) return failure('timeout', error.message)
  return failure('connection_error', (error as RequestError).code)
}

function isJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

interface Place {
  start: () => void
  newer: Place | undefined
  older: Place | undefined
}

/**
 * Attempts waiting for a free connection. The newest is served first: when the cap is reached the service
 * is overloaded, and the newest attempt has the most time left before its deadline to get an answer; the
 * oldest would mostly be aborted by its deadline soon after connecting, and every connection opened for
 * nothing costs the CPU the overloaded service lacks. A waiting attempt leaves its place when it is
 * aborted or times out, so none stays behind however long the overload lasts.
 */
class WaitingLine {
  private newest: Place | undefined

  add (start: () => void): Place {
    const place: Place = { start, newer: undefined, older: this.newest }
    if (this.newest !== undefined) this.newest.newer = place
    this.newest = place
    return place
  }

  remove (place: Place): void {
    if (place.older !== undefined) place.older.newer = place.newer
    if (place.newer !== undefined) place.newer.older = place.older
    else if (this.newest === place) this.newest = place.older
    place.newer = place.older = undefined
  }

  /** The start function of the newest waiting attempt, which leaves the line; undefined when it is empty. */
  takeNewest (): (() => void) | undefined {
    const place = this.newest
    if (place === undefined) return undefined
    this.remove(place)
    return place.start
  }
}

/**
 * got hands node:http an options object of 34 fields, built per request; node:http copies it twice (into the
 * URL's fields, then in the agent), and a copy that large is slow. This client sets none of its TLS, DNS or
 * socket fields, so node:http gets only the three that are set: its defaults are the same as got's unset
 * fields. (Should a TLS or socket setting ever be configured in prepareOptions, it must be passed on here.)
 */
function nativeOptions ({ method, headers, agent }: RequestOptions): RequestOptions {
  return { method, headers, agent }
}

/**
 * The got options every attempt starts from, built and validated once. Per attempt, got only copies them
 * (`got(undefined, undefined, options)`): merging an options object into got's defaults on every call
 * (validation, URL parsing, lower-casing headers) was a large part of what an attempt cost.
 */
function prepareOptions (url: string, agent: { http: HttpAgent, https: HttpsAgent }): Options {
  const { origin: upstreamOrigin, protocol } = new URL(url)
  // Redirects stay on the upstream's origin, so its protocol's request function serves every request.
  const nativeRequest = protocol === 'https:' ? httpsRequest : httpRequest
  const options = new Options(url, {
    isStream: true,
    agent,
    request: (requestUrl: URL, requestOptions: RequestOptions, callback?: (response: IncomingMessage) => void): ClientRequest =>
      nativeRequest(requestUrl, nativeOptions(requestOptions), callback),
    retry: { limit: 0 }, // hedging is the retry policy; got must not add its own
    throwHttpErrors: false, // a non-200 is a failed attempt, classified below
    followRedirect: (response: PlainResponse) =>
      new URL(response.headers.location ?? '', response.url).origin === upstreamOrigin,
    maxRedirects: MAX_REDIRECTS
  })
  // No response cache is used, so its settings are all unset. got spreads them into the options of every
  // node:http request, and on Node 20 spreading an object with keys in front of got's 30-odd other fields
  // costs about 30 µs per request (V8 builds the object slowly); an empty object costs next to nothing.
  options.cacheOptions = {}
  options.freeze()
  return options
}

export function createUpstreamClient (url: string, { maxBodyBytes, maxSockets }: UpstreamClientOptions): UpstreamClient & { close (): void } {
  // One keep-alive pool for the life of the service: hedges and later requests reuse warm sockets.
  const agentOptions = { keepAlive: true, maxSockets, maxTotalSockets: maxSockets }
  const agent = { http: new HttpAgent(agentOptions), https: new HttpsAgent(agentOptions) }
  const prepared = prepareOptions(url, agent)
  /**
   * Attempts sending or waiting for an answer right now; each holds at most one connection. Beyond
   * `maxSockets` an attempt waits in `waiting` without any got request or socket of its own yet: the agent
   * could queue it too, but would keep a got request, a ClientRequest and their buffers for each, and would
   * open a connection for a queued request even after it was aborted.
   */
  let active = 0
  const waiting = new WaitingLine()

  function release (): void {
    active--
    waiting.takeNewest()?.()
  }

  function attempt (signal: AbortSignal, timeoutMs: number, requestId: string): Promise<UpstreamAttempt> {
    if (signal.aborted) return Promise.resolve(aborted(signal))
    if (active < maxSockets) return send(signal, timeoutMs, requestId)
    return new Promise((resolve) => {
      const queuedAt = performance.now()
      const leave = (outcome: UpstreamAttempt): void => {
        waiting.remove(place)
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        resolve(outcome)
      }
      const onAbort = (): void => leave(aborted(signal))
      // The attempt's time limit counts from its start, waiting included.
      const timer = setTimeout(leave, timeoutMs, failure('timeout', `no upstream connection free within ${timeoutMs} ms`))
      const start = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', onAbort)
        resolve(send(signal, timeoutMs - (performance.now() - queuedAt), requestId))
      }
      signal.addEventListener('abort', onAbort)
      const place = waiting.add(start)
    })
  }

  /** Sends one attempt now; it holds one of the `maxSockets` slots until its outcome is known. */
  function send (signal: AbortSignal, timeoutMs: number, requestId: string): Promise<UpstreamAttempt> {
    active++
    return new Promise((resolve) => {
      const options = new Options(undefined, undefined, prepared)
      // The copy owns its headers and timeouts, so setting them here touches no other attempt.
      // The same id as the client's request, so upstream logs can be matched with ours.
      options.headers[REQUEST_ID_HEADER] = requestId
      options.timeout.request = timeoutMs
      const stream = got(undefined, undefined, options) as Request
      // The first outcome counts; whatever the stream reports after it changes nothing.
      let firstOutcome = (outcome: UpstreamAttempt): void => {
        firstOutcome = ignoreError
        signal.removeEventListener('abort', onAbort)
        release()
        resolve(outcome)
      }
      const decide = (outcome: UpstreamAttempt): void => firstOutcome(outcome)
      const giveUp = (outcome: UpstreamAttempt): void => {
        stream.destroy()
        decide(outcome)
      }
      let clientRequest: ClientRequest | undefined
      stream.once('request', (created: ClientRequest) => { clientRequest = created })
      const onAbort = (): void => {
        resetAndDestroy(stream, clientRequest)
        decide(aborted(signal))
      }
      signal.addEventListener('abort', onAbort)
      // Also hears errors after the outcome is known (a late reset), which change nothing; an unheard
      // 'error' event would crash the process.
      stream.on('error', (error) => giveUp(classifyError(error)))
      stream.once('response', (response: PlainResponse) => {
        if (response.statusCode !== 200) {
          giveUp(failure('http_error', `status ${response.statusCode}`))
          return
        }
        if (Number(response.headers['content-length']) > maxBodyBytes) {
          giveUp(failure('too_large', `content-length ${response.headers['content-length']}`))
          return
        }
        readBody(stream, giveUp, decide)
      })
    })
  }

  /** Reads the body, giving up as soon as it grows past `maxBodyBytes` so a huge body is never buffered. */
  function readBody (stream: Request, giveUp: (outcome: UpstreamAttempt) => void, decide: (outcome: UpstreamAttempt) => void): void {
    const chunks: Buffer[] = []
    let size = 0
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > maxBodyBytes) giveUp(failure('too_large', `over ${maxBodyBytes} bytes`))
      else chunks.push(chunk)
    })
    stream.once('end', () => {
      const text = Buffer.concat(chunks, size).toString('utf8')
      decide(isJson(text) ? { ok: true, value: text } : failure('invalid_json', 'body is not JSON'))
    })
  }

  return {
    url,
    attempt,
    close () {
      agent.http.destroy()
      agent.https.destroy()
    }
  }
}

/**
 * Decorates `fastify.upstream`: the one got-based client this service calls the upstream with.
 * With no UPSTREAM_URL configured it starts the built-in simulator on loopback and calls that.
 */
export default fp(async (fastify) => {
  const { UPSTREAM_URL, MAX_BODY_BYTES, UPSTREAM_MAX_SOCKETS } = fastify.config
  let url = UPSTREAM_URL
  if (url === '') {
    const simulator = await startSimulator()
    fastify.addHook('onClose', () => simulator.close())
    fastify.log.info({ upstream: simulator.url }, 'UPSTREAM_URL is not set: calling the built-in simulator')
    url = simulator.url
  }
  const upstream = createUpstreamClient(url, { maxBodyBytes: MAX_BODY_BYTES, maxSockets: UPSTREAM_MAX_SOCKETS })
  fastify.addHook('onClose', async () => upstream.close())
  fastify.decorate('upstream', upstream)
}, { name: 'upstream-client', dependencies: ['config'] })
