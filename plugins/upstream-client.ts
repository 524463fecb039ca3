import fp from 'fastify-plugin'
import got, { TimeoutError, type Got, type PlainResponse, type Request, type RequestError } from 'got'
import { Agent as HttpAgent } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { once } from 'node:events'
import type { AttemptOutcome } from '../lib/hedging.js'
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
  /** One GET to the upstream, stopped by `signal` or after `timeoutMs`; never rejects. */
  attempt (signal: AbortSignal, timeoutMs: number, requestId: string): Promise<UpstreamAttempt>
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

/**
 * An aborted attempt's connection is reset (RST) rather than closed (FIN): the upstream learns at once that
 * nobody is waiting, and no TIME_WAIT socket stays behind here. Under load, tens of thousands of TIME_WAIT
 * sockets towards one upstream address make every new connect() search long for a free local port.
 */
function resetAndDestroy (stream: Request): void {
  stream.socket?.resetAndDestroy()
  stream.destroy()
}

/** got wraps every transport failure in a RequestError; its code says what happened (ECONNRESET, ...). */
function classifyError (error: unknown, signal: AbortSignal): UpstreamAttempt {
  if (signal.aborted) return failure('aborted', String(signal.reason))
  if (error instanceof TimeoutError) return failure('timeout', error.message)
  return failure('connection_error', (error as RequestError).code)
}

/** Reads the body, giving up as soon as it grows past `maxBytes` so a huge body is never buffered. */
async function readLimitedBody (stream: AsyncIterable<Buffer>, maxBytes: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    size += chunk.length
    if (size > maxBytes) return undefined
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size)
}

function ignoreLateError (): void {}

function isJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

export function createUpstreamClient (url: string, maxBodyBytes: number): UpstreamClient & { close (): void } {
  const upstreamOrigin = new URL(url).origin
  // One keep-alive pool for the life of the service: hedges and later requests reuse warm sockets.
  const agent = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) }
  const client: Got = got.extend({
    agent,
    retry: { limit: 0 }, // hedging is the retry policy; got must not add its own
    throwHttpErrors: false, // a non-200 is a failed attempt, classified below
    followRedirect: (response: PlainResponse) =>
      new URL(response.headers.location ?? '', response.url).origin === upstreamOrigin,
    maxRedirects: MAX_REDIRECTS
  })

  async function attempt (signal: AbortSignal, timeoutMs: number, requestId: string): Promise<UpstreamAttempt> {
    const stream = client.stream(url, {
      timeout: { request: timeoutMs },
      // The same id as the client's request, so upstream logs can be matched with ours.
      headers: { [REQUEST_ID_HEADER]: requestId }
    })
    // Errors the stream raises after the outcome is known (a late reset, a late abort) change nothing,
    // and an unheard 'error' event would crash the process.
    stream.on('error', ignoreLateError)
    const abort = (): void => resetAndDestroy(stream)
    signal.addEventListener('abort', abort, { once: true })
    const outcome = await readOutcome(stream, signal)
    signal.removeEventListener('abort', abort)
    return outcome
  }

  /** Waits for the answer and judges it; never throws. */
  async function readOutcome (stream: Request, signal: AbortSignal): Promise<UpstreamAttempt> {
    try {
      const [response] = await once(stream, 'response', { signal }) as [PlainResponse]
      if (response.statusCode !== 200) {
        stream.destroy()
        return failure('http_error', `status ${response.statusCode}`)
      }
      if (Number(response.headers['content-length']) > maxBodyBytes) {
        stream.destroy()
        return failure('too_large', `content-length ${response.headers['content-length']}`)
      }
      const body = await readLimitedBody(stream, maxBodyBytes)
      if (body === undefined) {
        stream.destroy()
        return failure('too_large', `over ${maxBodyBytes} bytes`)
      }
      const text = body.toString('utf8')
      return isJson(text) ? { ok: true, value: text } : failure('invalid_json', 'body is not JSON')
    } catch (error) {
      stream.destroy()
      return classifyError(error, signal)
    }
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
 * Decorates `fastify.upstream`: the one got instance this service calls the upstream with.
 * With no UPSTREAM_URL configured it starts the built-in simulator on loopback and calls that.
 */
export default fp(async (fastify) => {
  const { UPSTREAM_URL, MAX_BODY_BYTES } = fastify.config
  let url = UPSTREAM_URL
  if (url === '') {
    const simulator = await startSimulator()
    fastify.addHook('onClose', () => simulator.close())
    fastify.log.info({ upstream: simulator.url }, 'UPSTREAM_URL is not set: calling the built-in simulator')
    url = simulator.url
  }
  const upstream = createUpstreamClient(url, MAX_BODY_BYTES)
  fastify.addHook('onClose', async () => upstream.close())
  fastify.decorate('upstream', upstream)
}, { name: 'upstream-client', dependencies: ['config'] })
