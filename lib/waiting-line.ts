export interface Place {
  start: () => void
  newer: Place | undefined
  older: Place | undefined
}

/**
 * Attempts waiting for a free connection. The newest is served first: when the cap is reached the service
 * is overloaded, and the newest attempt has the most time left before its deadline to get an answer; the
 * oldest would mostly be aborted by its deadline soon after connecting, and every connection opened for
 * nothing costs the CPU the overloaded service lacks. A waiting attempt leaves its place when it is
 * aborted or times out, so none stays behind however long the overload lasts.
 */
export class WaitingLine {
  private newest: Place | undefined

  add (start: () => void): Place {
    const place: Place = { start, newer: undefined, older: this.newest }
    if (this.newest !== undefined) this.newest.newer = place
    this.newest = place
    return place
  }

  remove (place: Place): void {
    if (place.older !== undefined) place.older.newer = place.newer
    if (place.newer !== undefined) place.newer.older = place.older
    else if (this.newest === place) this.newest = place.older
    place.newer = place.older = undefined
  }

  /** The start function of the newest waiting attempt, which leaves the line; undefined when it is empty. */
  takeNewest (): (() => void) | undefined {
    const place = this.newest
    if (place === undefined) return undefined
    this.remove(place)
    return place.start
  }
}
