/**
 * Closed-loop load for the hedged-tail scenario: a fixed number of clients, each sending its next request as
 * soon as its previous answer arrived, like a pool of callers waiting on the service.
 */
import type { Agent } from 'node:http'
import { performance } from 'node:perf_hooks'
import { withGeneratorLag, type GeneratorLag } from './generator-lag.js'
import { timedGet, unlimitedPool, type Answer } from './http-client.js'

export interface ClosedLoopOptions {
  url: URL
  clients: number
  /** Stop after this many requests in total ... */
  maxRequests: number
  /** ... or once this much time has passed, whichever comes first. */
  maxDurationMs: number
  /**
   * The connection pool, e.g. one a warm-up filled, so that the measured run starts on open connections; left open.
   * By default a new pool, closed at the end.
   */
  agent?: Agent
}

export interface ClosedLoopRun extends GeneratorLag {
  answers: Answer[]
  durationMs: number
}

export function runClosedLoop (options: ClosedLoopOptions): Promise<ClosedLoopRun> {
  return withGeneratorLag(() => closedLoop(options))
}

async function closedLoop (options: ClosedLoopOptions): Promise<{ answers: Answer[], durationMs: number }> {
  const agent = options.agent ?? unlimitedPool()
  const answers: Answer[] = []
  const startedAt = performance.now()
  const stopAt = startedAt + options.maxDurationMs
  let sent = 0
  const client = async (): Promise<void> => {
    while (sent < options.maxRequests && performance.now() < stopAt) {
      sent++
      answers.push(await timedGet(agent, options.url, startedAt).answer)
    }
  }
  await Promise.all(Array.from({ length: options.clients }, client))
  const durationMs = performance.now() - startedAt
  if (options.agent === undefined) agent.destroy()
  return { answers, durationMs }
}
