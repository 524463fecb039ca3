/**
 * A hedge budget, after gRPC's retry throttling: a bucket of tokens that failed attempts drain and
 * successful ones slowly refill. Hedges are allowed only while the bucket is more than half full, so when
 * the upstream is down the service stops multiplying the load on it by 1 + HEDGE_REQUESTS, and starts
 * hedging again once enough answers succeed.
 */
export class HedgeBudget {
  private tokens: number

  /**
   * @param maxTokens size of the bucket; it starts full
   * @param tokenRatio tokens a success puts back (a failure takes one)
   */
  constructor (private readonly maxTokens: number, private readonly tokenRatio: number) {
    this.tokens = maxTokens
  }

  allowsHedge (): boolean {
    return this.tokens > this.maxTokens / 2
  }

  recordSuccess (): void {
    this.tokens = Math.min(this.maxTokens, this.tokens + this.tokenRatio)
  }

  recordFailure (): void {
    this.tokens = Math.max(0, this.tokens - 1)
  }
}
