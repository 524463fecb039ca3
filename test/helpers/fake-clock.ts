import type { Clock } from '../../lib/call-engine.js'

interface FakeTimer { at: number, callback: () => void }

/**
 * A clock for the call engine's tests: time moves only when the test says so, and due timers run in the order of
 * their due time (or, to mimic an event loop that is late for several of them, in any order the test picks).
 */
export class FakeClock implements Clock {
  private time = 0
  private nextId = 1
  private readonly timers = new Map<number, FakeTimer>()

  now = (): number => this.time

  setTimeout = (callback: () => void, ms: number): number => {
    const id = this.nextId++
    this.timers.set(id, { at: this.time + Math.max(0, ms), callback })
    return id
  }

  clearTimeout = (timer: unknown): void => {
    this.timers.delete(timer as number)
  }

  /** Moves time forward by `ms`, running each timer that falls due at its own time, earliest first. */
  advance (ms: number): void {
    const until = this.time + ms
    for (let next = this.earliest(until); next !== undefined; next = this.earliest(until)) {
      const [id, timer] = next
      this.timers.delete(id)
      this.time = timer.at
      timer.callback()
    }
    this.time = until
  }

  /** Jumps to `ms` from now without running anything, as a blocked event loop does; then runs the due timers latest first. */
  jumpLate (ms: number): void {
    this.time += ms
    const due = [...this.timers].filter(([, timer]) => timer.at <= this.time).sort(([, a], [, b]) => b.at - a.at)
    for (const [id, timer] of due) {
      if (!this.timers.delete(id)) continue
      timer.callback()
    }
  }

  /**
   * Runs the timers due within `ms` from now without moving time, as Node does with a timer it counted from an event
   * loop clock that lagged real time.
   */
  fireEarly (ms: number): void {
    const due = [...this.timers].filter(([, timer]) => timer.at <= this.time + ms)
    for (const [id, timer] of due) {
      if (!this.timers.delete(id)) continue
      timer.callback()
    }
  }

  /** Moves time forward without running any timer: the loop is busy. */
  stall (ms: number): void {
    this.time += ms
  }

  pendingTimers (): number {
    return this.timers.size
  }

  private earliest (until: number): [number, FakeTimer] | undefined {
    let found: [number, FakeTimer] | undefined
    for (const entry of this.timers) {
      if (entry[1].at <= until && (found === undefined || entry[1].at < found[1].at)) found = entry
    }
    return found
  }
}
