/**
 * Load generators for the deadline and memory scenarios.
 *
 * Open loop: requests start on a fixed schedule whatever the answers do. A closed loop (each client waits for
 * its answer) would slow down exactly when the service does, and the queue would hide behind slow answers.
 */
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { withGeneratorLag, type GeneratorLag } from './generator-lag.js'
import { timedGet, unlimitedPool, type Answer, type InFlight } from './http-client.js'

export interface LoadRun extends GeneratorLag {
  answers: Answer[]
  /** How far behind its schedule the generator started its most delayed request. */
  maxScheduleLagMs: number
}

export interface OpenLoopOptions {
  url: URL
  ratePerSecond: number
  durationMs: number
  /** After the last request is sent, how long to wait for the answers before giving up on the rest. */
  maxWaitMs: number
  /** Called once every request has been sent (e.g. to sample the service at its busiest). */
  onAllSent?: () => void
}

/** Waits for every answer, but at most `maxWaitMs`; requests still open then are given up (NO_ANSWER). */
async function collect (inFlight: InFlight[], maxWaitMs: number): Promise<Answer[]> {
  const all = Promise.all(inFlight.map((request) => request.answer))
  const timer = setTimeout(() => { for (const request of inFlight) request.giveUp() }, maxWaitMs)
  const answers = await all
  clearTimeout(timer)
  return answers
}

/**
 * Starts `ratePerSecond` requests a second for `durationMs`: a 1 ms ticker starts every request that is due,
 * so a late tick catches up at once instead of shifting the whole schedule.
 */
export function runOpenLoop (options: OpenLoopOptions): Promise<LoadRun> {
  return withGeneratorLag(async () => {
    const agent = unlimitedPool()
    const total = Math.round(options.ratePerSecond * options.durationMs / 1000)
    const intervalMs = 1000 / options.ratePerSecond
    const inFlight: InFlight[] = []
    let maxScheduleLagMs = 0
    const startedAt = performance.now()
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now()
        const due = Math.min(total, Math.floor((now - startedAt) / intervalMs) + 1)
        while (inFlight.length < due) {
          maxScheduleLagMs = Math.max(maxScheduleLagMs, now - startedAt - inFlight.length * intervalMs)
          inFlight.push(timedGet(agent, options.url, startedAt))
        }
        if (inFlight.length === total) {
          clearInterval(ticker)
          resolve()
        }
      }
      const ticker = setInterval(tick, 1)
      tick()
    })
    options.onAllSent?.()
    const answers = await collect(inFlight, options.maxWaitMs)
    agent.destroy()
    return { answers, maxScheduleLagMs }
  })
}

/**
 * A short open-loop warm-up (1 s at 200 req/s on a pool of its own) so that the measured requests do not pay
 * for JIT compilation. `url` should carry a short timeout.
 */
export function warmUp (url: URL): Promise<LoadRun> {
  return runOpenLoop({ url, ratePerSecond: 200, durationMs: 1000, maxWaitMs: 3000 })
}

export interface BurstOptions {
  url: URL
  /** How many requests, each on its own already-open keep-alive connection. */
  count: number
  /** A cheap path answered at once, used to open and warm the connections. */
  warmUrl: URL
  maxWaitMs: number
}

/**
 * Opens `count` keep-alive connections, warms each with one request, then sends `count` requests at the same
 * instant, one per connection: they reach the service together, with no connection handshakes to spread
 * them out.
 */
export async function runBurst (options: BurstOptions): Promise<LoadRun> {
  const agent = unlimitedPool()
  const warmStart = performance.now()
  const warming = Array.from({ length: options.count }, () => timedGet(agent, options.warmUrl, warmStart).answer)
  await Promise.all(warming)
  await sleep(100) // let every warmed socket go back to the pool
  return withGeneratorLag(async () => {
    const startedAt = performance.now()
    const inFlight = Array.from({ length: options.count }, () => timedGet(agent, options.url, startedAt))
    const answers = await collect(inFlight, options.maxWaitMs)
    agent.destroy()
    // All requests are due at once, so the last one's send time is how long sending the burst took.
    return { answers, maxScheduleLagMs: Math.max(...answers.map((answer) => answer.sentAtMs)) }
  })
}
