/** Plain-text tables and number formats for the bench's printed report. */

export interface Target {
  name: string
  met: boolean
  /** What was measured, e.g. 'p99 12.3 ms'. */
  measured: string
}

/** Left-aligns the first column and right-aligns the others (they are numbers). */
export function table (title: string, header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => (row[column] ?? '').length)))
  const line = (cells: readonly string[]): string => cells
    .map((cell, column) => column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0))
    .join('  ')
    .trimEnd()
  const rule = widths.map((width) => '-'.repeat(width)).join('  ')
  return [`## ${title}`, line(header), rule, ...rows.map(line)].join('\n')
}

export function targetsTable (title: string, targets: readonly Target[]): string {
  return table(title, ['target', 'measured', 'result'], targets.map((target) => [
    target.name,
    target.measured,
    target.met ? 'PASS' : 'MISS'
  ]))
}

export function ms (value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-'
}

export function mib (bytes: number): string {
  return Number.isFinite(bytes) ? (bytes / 1024 / 1024).toFixed(1) : '-'
}

export function ratio (value: number): string {
  return Number.isFinite(value) ? `${value.toFixed(2)}×` : '-'
}

export function percent (share: number): string {
  return Number.isFinite(share) ? `${(share * 100).toFixed(1)}%` : '-'
}

export function integer (value: number): string {
  return Number.isFinite(value) ? Math.round(value).toString() : '-'
}

/** e.g. { 408: 2490, ECONNRESET: 10 } → '408:2490 ECONNRESET:10'. */
export function counts (byKey: Record<string, number>): string {
  return Object.entries(byKey).sort(([a], [b]) => a.localeCompare(b)).map(([key, count]) => `${key}:${count}`).join(' ')
}
