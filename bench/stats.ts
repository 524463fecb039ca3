/** Small, exact statistics over every sample (no sampling histograms: the runs are small enough). */

export interface Distribution {
  count: number
  min: number
  p50: number
  p90: number
  p99: number
  max: number
  mean: number
}

/** Nearest-rank quantile of an ascending array; NaN for an empty one. */
export function quantile (ascending: readonly number[], q: number): number {
  if (ascending.length === 0) return Number.NaN
  const rank = Math.ceil(q * ascending.length)
  return ascending[Math.min(ascending.length - 1, Math.max(0, rank - 1))] as number
}

export function ascending (values: Iterable<number>): number[] {
  return [...values].sort((a, b) => a - b)
}

export function distribution (values: Iterable<number>): Distribution {
  const sorted = ascending(values)
  const sum = sorted.reduce((total, value) => total + value, 0)
  return {
    count: sorted.length,
    min: sorted[0] ?? Number.NaN,
    p50: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length
  }
}

/** How many items fall under each key, e.g. answers by status. */
export function countBy<T> (items: Iterable<T>, keyOf: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const item of items) {
    const key = keyOf(item)
    counts[key] = (counts[key] ?? 0) + 1
  }
  return counts
}

/** Points (x, share of all samples ≤ x) of the empirical CDF, thinned to at most `maxPoints`. */
export function cdfPoints (sortedValues: readonly number[], total: number, maxPoints = 400): Array<[number, number]> {
  const points: Array<[number, number]> = []
  const step = Math.max(1, Math.floor(sortedValues.length / maxPoints))
  for (let index = 0; index < sortedValues.length; index += step) {
    points.push([sortedValues[index] as number, (index + 1) / total])
  }
  const last = sortedValues[sortedValues.length - 1]
  if (last !== undefined) points.push([last, sortedValues.length / total])
  return points
}
