/**
 * The median of the samples taken within the last `windowMs`. Load shedding judges the wait of new
 * connections by it rather than by the last sample or the mean: one slow moment (a start-up, a garbage
 * collection, a burst of clients connecting at once) makes one or two probes wait hundreds of milliseconds,
 * and shedding on them turned such bursts into storms of 503s; a mean still lets one long stall outweigh the
 * quiet samples around it. When most of the last second's probes waited too long, the wait has lasted: that
 * is load the service cannot serve.
 *
 * Each probe counts once. A probe that still waits is sampled again and again, its age growing; were each
 * sample its own, one 300 ms wait would fill three slots of a second and a burst the service absorbs in a third
 * of a second would outvote the quiet samples around it. A sample with the same key as the newest one replaces
 * it instead.
 */
interface Sample {
  atMs: number
  value: number
  key: number | undefined
}

export class SlidingMedian {
  /** Samples in the window, oldest first. */
  private readonly samples: Sample[] = []

  constructor (private readonly windowMs: number) {}

  /**
   * Adds a sample taken at `atMs` (replacing the newest one if it has the same `key`) and returns the median of
   * every sample taken since `atMs - windowMs` (of an even count, the lower of the two middle ones: shedding
   * starts only when more than half wait).
   */
  add (atMs: number, value: number, key?: number): number {
    const newest = this.samples.at(-1)
    if (key !== undefined && newest?.key === key) this.samples.pop()
    this.samples.push({ atMs, value, key })
    // The sample just added is always in the window, so the loop never empties the list.
    while ((this.samples[0] as Sample).atMs <= atMs - this.windowMs) this.samples.shift()
    const sorted = this.samples.map((sample) => sample.value).sort((a, b) => a - b)
    return sorted[Math.floor((sorted.length - 1) / 2)] as number
  }
}
