import got, { Options, TimeoutError, type PlainResponse, type Request, type RequestError } from 'got'
import { Agent as HttpAgent, type ClientRequest } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { AttemptOutcome } from './call-engine.js'
import { ignoreError, prepareOptions, resetAndDestroy } from './got-fast-path.js'
import { WaitingLine } from './waiting-line.js'
import { ATTEMPT_HEADER, REQUEST_ID_HEADER, TIMEOUT_HEADER } from './constants.js'
import { PUSHBACK_STATUSES } from './pushback.js'

/** Why one upstream attempt did not produce a usable answer. */
export type AttemptFailure =
  | 'http_error' // a status other than 200
  | 'invalid_json' // 200, but the body does not parse as JSON
  | 'too_large' // the body is over MAX_BODY_BYTES
  | 'connection_error' // refused, reset, DNS, broken stream
  | 'timeout' // the attempt's own time limit passed
  | 'aborted' // the caller aborted it (another attempt won, deadline, client gone)

/**
 * A successful attempt carries the upstream's JSON text, passed on byte for byte. A failed one answered 429 or 503
 * with `Retry-After` carries them too: the upstream asks its callers to back off (see lib/pushback.ts).
 */
export type UpstreamAttempt = AttemptOutcome<string, AttemptFailure> & { pushback?: Pushback }

export interface Pushback {
  statusCode: number
  retryAfter: string
}

/**
 * What an attempt tells the upstream (SPEC §2, "The deadline protocol"): `x-request-id`, `x-attempt` and
 * `x-timeout-ms`, the whole milliseconds left until the client's deadline when the attempt is sent.
 */
export interface AttemptTags {
  requestId: string
  /** 1-based. */
  attempt: number
  /** The client's deadline, on performance.now()'s clock. */
  deadline: number
}

export interface UpstreamClient {
  /** The endpoint every attempt calls. */
  readonly url: string
  /**
   * One GET to the upstream, stopped by `signal` or after `timeoutMs`; never rejects. While all
   * `maxSockets` connections are busy, the attempt waits for one, and its signal and time limit still apply.
   */
  attempt (signal: AbortSignal, timeoutMs: number, tags: AttemptTags): Promise<UpstreamAttempt>
}

export interface UpstreamClientOptions {
  /** Largest body accepted (MAX_BODY_BYTES). */
  maxBodyBytes: number
  /** Upstream connections open at once, idle ones included (UPSTREAM_MAX_SOCKETS). */
  maxSockets: number
}

function failure (reason: AttemptFailure, detail: string): UpstreamAttempt {
  return { ok: false, reason, detail }
}

function aborted (signal: AbortSignal): UpstreamAttempt {
  return failure('aborted', String(signal.reason))
}

/** got wraps every transport failure in a RequestError; its code says what happened (ECONNRESET, ...). */
function classifyError (error: unknown): UpstreamAttempt {
  if (error instanceof TimeoutError) return failure('timeout', error.message)
  return failure('connection_error', (error as RequestError).code)
}

function httpError ({ statusCode, headers }: PlainResponse): UpstreamAttempt {
  const retryAfter = headers['retry-after']
  if (retryAfter === undefined || !PUSHBACK_STATUSES.has(statusCode)) return failure('http_error', `status ${statusCode}`)
  return { ...failure('http_error', `status ${statusCode}, Retry-After ${retryAfter}`), pushback: { statusCode, retryAfter } }
}

function isJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
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

  function attempt (signal: AbortSignal, timeoutMs: number, tags: AttemptTags): Promise<UpstreamAttempt> {
    if (signal.aborted) return Promise.resolve(aborted(signal))
    if (active < maxSockets) return send(signal, timeoutMs, tags)
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
        resolve(send(signal, timeoutMs - (performance.now() - queuedAt), tags))
      }
      signal.addEventListener('abort', onAbort)
      const place = waiting.add(start)
    })
  }

  /** Sends one attempt now; it holds one of the `maxSockets` slots until its outcome is known. */
  function send (signal: AbortSignal, timeoutMs: number, { requestId, attempt, deadline }: AttemptTags): Promise<UpstreamAttempt> {
    active++
    return new Promise((resolve) => {
      const options = new Options(undefined, undefined, prepared)
      // The copy owns its headers and timeouts, so setting them here touches no other attempt.
      // The same id as the client's request, so upstream logs can be matched with ours; the time left is counted
      // now, as the attempt leaves (after any wait for a free connection), so an upstream can give up on work
      // nobody will wait for.
      options.headers[REQUEST_ID_HEADER] = requestId
      options.headers[ATTEMPT_HEADER] = String(attempt)
      options.headers[TIMEOUT_HEADER] = String(Math.max(Math.floor(deadline - performance.now()), 0))
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
          giveUp(httpError(response))
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
