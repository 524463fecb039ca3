/**
 * The mean of the samples taken within the last `windowMs`. Load shedding judges the wait of new connections
 * by it rather than by the last sample alone: one slow moment (a start-up, a garbage collection, a burst of
 * clients connecting at once) must not shed everything that arrives next, while a wait that lasts is an
 * overload the service truly cannot serve.
 */
interface Sample {
  atMs: number
  value: number
}

export class SlidingAverage {
  /** Samples in the window, oldest first. */
  private readonly samples: Sample[] = []
  private sum = 0

  constructor (private readonly windowMs: number) {}

  /** Adds a sample taken at `atMs` and returns the mean of every sample taken since `atMs - windowMs`. */
  add (atMs: number, value: number): number {
    this.samples.push({ atMs, value })
    this.sum += value
    // The sample just added is always in the window, so the loop never empties the list.
    while ((this.samples[0] as Sample).atMs <= atMs - this.windowMs) {
      this.sum -= (this.samples.shift() as Sample).value
    }
    return this.sum / this.samples.length
  }
}
