/**
 * The share of new requests the service sheds, adjusted at every sample of the overload signal: one step up
 * while the service is overloaded, one step down while it is not.
 *
 * Shedding everything at once breaks down with clients that retry at once (a closed loop that ignores
 * Retry-After): a 503 costs them nothing, so they come back at the rate the service answers 503s, which
 * keeps it as busy as before, and the overload never ends. Shedding a share that grows while the wait lasts
 * lets some requests through: their clients wait for a real answer instead of retrying, the load falls, and
 * the share settles where the service serves what it can and sheds the rest. Under an overload that does
 * not let up, it reaches 1 within STEPS samples.
 */
const STEPS = 10

export class ShedShare {
  /** 0 (shed nothing) to STEPS (shed everything). */
  private level = 0

  /** Records one sample of the overload signal; returns the share now shed, 0 to 1. */
  update (overloaded: boolean): number {
    this.level = overloaded ? Math.min(STEPS, this.level + 1) : Math.max(0, this.level - 1)
    return this.share
  }

  get share (): number {
    return this.level / STEPS
  }

  /** Whether the next request is shed: with the probability `share`. */
  sheds (random: () => number = Math.random): boolean {
    return random() < this.share
  }
}
