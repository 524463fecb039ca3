/**
 * What @types/autocannon leaves out of autocannon's programmatic API (v9, see its README "API") and the bench uses:
 * runs made with `skipAggregateResult`, and `aggregateResult`, which merges them.
 */
import 'autocannon'

declare module 'autocannon' {
  /** One run's counts and its histograms still encoded (opaque here). */
  interface RawResult {
    /** Seconds. */
    duration: number
    errors: number
    non2xx: number
    '2xx': number
  }

  /** Merges runs made with skipAggregateResult: counts add up, latency histograms are combined. */
  function aggregateResult (results: RawResult[], options: Options): Result
}
