import type { AttemptRecord } from './call-engine.js'

/**
 * A Server-Timing header value: the total, then each attempt's duration and how it ended, so a browser's
 * devtools draw the hedge timeline, e.g.
 *   total;dur=412.3, attempt1;dur=412.1;desc="aborted", attempt2;dur=110.4;desc="200"
 */
export function serverTimingHeader (totalMs: number, attempts: readonly AttemptRecord[]): string {
  const entries = [`total;dur=${totalMs.toFixed(1)}`]
  for (const attempt of attempts) {
    const durationMs = attempt.endedAt - attempt.startedAt
    const description = attempt.result === 'success' ? '200' : attempt.result
    entries.push(`attempt${attempt.attempt};dur=${durationMs.toFixed(1)};desc="${description}"`)
  }
  return entries.join(', ')
}
