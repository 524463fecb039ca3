import { Options, type PlainResponse, type Request } from 'got'
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http'
import { request as httpRequest } from 'node:http'
import type { Agent as HttpsAgent } from 'node:https'
import { request as httpsRequest } from 'node:https'

/**
 * The ways this service drives got faster than got's public defaults would: options prepared once and copied per
 * attempt, node:http given only the fields that are set, and an aborted attempt's connection reset at once. Each
 * relies on got internals that test/lib/got-fast-path.test.ts pins, so that a got upgrade that changes one fails
 * loudly there instead of slowing down or breaking attempts.
 */

/** At most this many redirects, and only to the upstream's own origin. */
const MAX_REDIRECTS = 3

export function ignoreError (): void {}

/**
 * An aborted attempt's connection is reset (RST) rather than closed (FIN): the upstream learns at once that
 * nobody is waiting, and no TIME_WAIT socket stays behind here. Under load, tens of thousands of TIME_WAIT
 * sockets towards one upstream address make every new connect() search long for a free local port.
 *
 * node:http reports every connection dropped before an answer as a 'socket hang up' error of the
 * ClientRequest, and got turns each into a RequestError with both stack traces formatted: a large part of what an
 * aborted attempt costs, for an outcome already known (BENCHMARKS.md, "Where the time went"). got's own listeners are detached first (got has
 * nothing left to do for a destroyed request; it cancels its timers in destroy()), one that ignores the
 * error stays, as a ClientRequest must not emit an unheard 'error'.
 */
export function resetAndDestroy (stream: Request, clientRequest: ClientRequest | undefined): void {
  clientRequest?.removeAllListeners('error').on('error', ignoreError)
  stream.socket?.resetAndDestroy()
  stream.destroy()
}

/**
 * got hands node:http an options object of 34 fields, built per request; node:http copies it twice (into the
 * URL's fields, then in the agent), and a copy that large is slow. This client sets none of its TLS, DNS or
 * socket fields, so node:http gets only the three that are set: its defaults are the same as got's unset
 * fields. (Should a TLS or socket setting ever be configured in prepareOptions, it must be passed on here.)
 */
export function nativeOptions ({ method, headers, agent }: RequestOptions): RequestOptions {
  return { method, headers, agent }
}

/**
 * The got options every attempt starts from, built and validated once. Per attempt, got only copies them
 * (`got(undefined, undefined, options)`): merging an options object into got's defaults on every call
 * (validation, URL parsing, lower-casing headers) was a large part of what an attempt cost.
 */
export function prepareOptions (url: string, agent: { http: HttpAgent, https: HttpsAgent }): Options {
  const { origin: upstreamOrigin, protocol } = new URL(url)
  // Redirects stay on the upstream's origin, so its protocol's request function serves every request.
  const nativeRequest = protocol === 'https:' ? httpsRequest : httpRequest
  const options = new Options(url, {
    isStream: true,
    agent,
    request: (requestUrl: URL, requestOptions: RequestOptions, callback?: (response: IncomingMessage) => void): ClientRequest =>
      nativeRequest(requestUrl, nativeOptions(requestOptions), callback),
    retry: { limit: 0 }, // hedging is the retry policy; got must not add its own
    throwHttpErrors: false, // a non-200 is a failed attempt, which lib/upstream-client.ts classifies
    followRedirect: (response: PlainResponse) =>
      new URL(response.headers.location ?? '', response.url).origin === upstreamOrigin,
    maxRedirects: MAX_REDIRECTS
  })
  // No response cache is used, so its settings are all unset. got spreads them into the options of every
  // node:http request, and on Node 20 spreading an object with keys in front of got's 30-odd other fields
  // is slow (V8 builds the object slowly; BENCHMARKS.md has the figure); an empty object costs next to nothing.
  options.cacheOptions = {}
  options.freeze()
  return options
}
