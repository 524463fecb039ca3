/**
 * One timed GET as the client sees it: from the moment the request is handed to Node until the last byte of
 * the answer, or the error that ended it.
 */
import { Agent, request } from 'node:http'
import { performance } from 'node:perf_hooks'

export interface Answer {
  /** When the request was sent, in ms since the start of the run. */
  sentAtMs: number
  /** From sending to the end of the answer's body (or to the error). */
  latencyMs: number
  /** The HTTP status, or 0 when no answer came. */
  status: number
  /** Why no answer came, e.g. 'ECONNRESET' or NO_ANSWER; undefined when one did. */
  error: string | undefined
  /** Whether the request went out on a connection that was already open. */
  reusedSocket: boolean
}

/** How the reports count an answer: its HTTP status, or the error of a request that got none. */
export function statusOf (answer: Answer): string {
  return answer.error ?? String(answer.status)
}

/** The error of requests the bench itself gave up on after waiting long enough. */
export const NO_ANSWER = 'NO_ANSWER'

/**
 * A connection pool with no cap: open-loop load must never queue inside the client, or the client's own
 * queue would be measured as the service's latency.
 */
export function unlimitedPool (): Agent {
  return new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 8192 })
}

export interface InFlight {
  readonly answer: Promise<Answer>
  /** Ends the request now; it is recorded with the error NO_ANSWER. */
  giveUp (): void
}

export function timedGet (agent: Agent, url: URL, runStartedAt: number): InFlight {
  const startedAt = performance.now()
  let giveUp = (): void => {}
  const answer = new Promise<Answer>((resolve) => {
    const finish = (status: number, error: string | undefined): void => {
      resolve({
        sentAtMs: startedAt - runStartedAt,
        latencyMs: performance.now() - startedAt,
        status,
        error,
        reusedSocket: req.reusedSocket
      })
    }
    const req = request(url, { agent }, (res) => {
      res.on('data', () => {})
      res.on('end', () => finish(res.statusCode ?? 0, undefined))
      res.on('error', (error: NodeJS.ErrnoException) => finish(0, error.code ?? error.message))
    })
    req.on('error', (error: NodeJS.ErrnoException) => finish(0, error.code ?? error.message))
    giveUp = () => {
      const error: NodeJS.ErrnoException = new Error('no answer in time')
      error.code = NO_ANSWER
      req.destroy(error)
    }
    req.end()
  })
  return { answer, giveUp: () => giveUp() }
}
