/**
 * The part of autocannon's programmatic API (v9, see its README "API") the bench uses; the package ships no
 * types of its own.
 */
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  namespace autocannon {
    interface Options {
      url: string
      connections?: number
      /** Seconds. */
      duration?: number
      /** Seconds before a request is counted as a timeout. */
      timeout?: number
      pipelining?: number
      headers?: Record<string, string>
      /** Resolve with a RawResult, to be merged with others by aggregateResult. */
      skipAggregateResult?: boolean
    }

    /** hdr-histogram-percentiles-obj: latency in ms, requests and throughput per second. */
    interface Histogram {
      average: number
      mean: number
      stddev: number
      min: number
      max: number
      total: number
      p50: number
      p90: number
      p97_5: number
      p99: number
      p99_9: number
    }

    interface Result {
      /** Seconds. */
      duration: number
      errors: number
      timeouts: number
      non2xx: number
      '2xx': number
      statusCodeStats: Record<string, { count: number }>
      latency: Histogram
      requests: Histogram & { sent: number }
      throughput: Histogram
    }

    /** One run's counts and its histograms still encoded (opaque here). */
    interface RawResult {
      /** Seconds. */
      duration: number
      errors: number
      non2xx: number
      '2xx': number
    }

    interface Instance<R> extends EventEmitter, Promise<R> {
      stop (): void
    }

    /** Merges runs made with skipAggregateResult: counts add up, latency histograms are combined. */
    function aggregateResult (results: RawResult[], options: Options): Result
  }

  function autocannon (options: autocannon.Options & { skipAggregateResult: true }): autocannon.Instance<autocannon.RawResult>
  function autocannon (options: autocannon.Options): autocannon.Instance<autocannon.Result>

  export = autocannon
}
