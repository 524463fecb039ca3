/**
 * The load generator's own event-loop delay while it runs a load. The generator times every answer on its
 * own event loop: when that loop is late (CPU contention, GC), answers look later than they were, so the
 * scenarios print this beside their latencies as the margin of error of the measurement.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'

export interface GeneratorLag {
  generatorLagP99Ms: number
  generatorLagMaxMs: number
}

export async function withGeneratorLag<T> (work: () => Promise<T>): Promise<T & GeneratorLag> {
  const lag = monitorEventLoopDelay({ resolution: 5 })
  lag.enable()
  try {
    const result = await work()
    return { ...result, generatorLagP99Ms: lag.percentile(99) / 1e6, generatorLagMaxMs: lag.max / 1e6 }
  } finally {
    lag.disable()
  }
}
