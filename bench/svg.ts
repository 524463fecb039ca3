/**
 * Three kinds of chart as hand-written SVG (no plotting library): lines (for CDFs), a histogram, and labelled points.
 * Plain SVG 1.1 with inline attributes, so GitHub and any browser render it as an image.
 */

const WIDTH = 760
const HEIGHT = 460
const MARGIN = { left: 72, right: 24, top: 62, bottom: 60 }
const PLOT_WIDTH = WIDTH - MARGIN.left - MARGIN.right
const PLOT_HEIGHT = HEIGHT - MARGIN.top - MARGIN.bottom
const FONT = 'font-family="Helvetica, Arial, sans-serif"'

export interface LineSeries {
  label: string
  color: string
  dashed?: boolean
  points: ReadonlyArray<readonly [number, number]>
}

export interface Marker {
  x: number
  label: string
  color: string
}

export interface Titles {
  title: string
  /** A second, smaller line under the title: the conditions of the measurement. */
  subtitle: string
  xLabel: string
  yLabel: string
}

interface Axes {
  xMin: number
  xMax: number
  yMin: number
  yMax: number
}

function escapeText (text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

/** A round step (1, 2 or 5 × 10^n) that cuts the range into about `count` intervals. */
function niceStep (range: number, count: number): number {
  const rough = range / count
  const power = 10 ** Math.floor(Math.log10(rough))
  const scaled = rough / power
  return (scaled <= 1 ? 1 : scaled <= 2 ? 2 : scaled <= 5 ? 5 : 10) * power
}

function ticks (min: number, max: number, count: number): number[] {
  const step = niceStep(max - min, count)
  const values: number[] = []
  for (let value = Math.ceil(min / step) * step; value <= max + step * 1e-9; value += step) {
    values.push(Number(value.toPrecision(12)))
  }
  return values
}

function scaleX (axes: Axes, x: number): number {
  return MARGIN.left + (x - axes.xMin) / (axes.xMax - axes.xMin) * PLOT_WIDTH
}

function scaleY (axes: Axes, y: number): number {
  return MARGIN.top + PLOT_HEIGHT - (y - axes.yMin) / (axes.yMax - axes.yMin) * PLOT_HEIGHT
}

function text (x: number, y: number, content: string, attributes = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${FONT} ${attributes}>${escapeText(content)}</text>`
}

/** Frame, grid, tick labels, axis titles and the chart title. */
function frame (axes: Axes, titles: Titles, formatY: (y: number) => string): string[] {
  const { title, subtitle, xLabel, yLabel } = titles
  const parts: string[] = [
    `<rect x="0" y="0" width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    text(WIDTH / 2, 24, title, 'font-size="16" font-weight="bold" text-anchor="middle"'),
    text(WIDTH / 2, 44, subtitle, 'font-size="12.5" fill="#444" text-anchor="middle"')
  ]
  for (const x of ticks(axes.xMin, axes.xMax, 8)) {
    const px = scaleX(axes, x)
    parts.push(`<line x1="${px.toFixed(1)}" y1="${MARGIN.top}" x2="${px.toFixed(1)}" y2="${MARGIN.top + PLOT_HEIGHT}" stroke="#e3e3e3"/>`)
    parts.push(text(px, MARGIN.top + PLOT_HEIGHT + 18, String(x), 'font-size="12" text-anchor="middle"'))
  }
  for (const y of ticks(axes.yMin, axes.yMax, 5)) {
    const py = scaleY(axes, y)
    parts.push(`<line x1="${MARGIN.left}" y1="${py.toFixed(1)}" x2="${MARGIN.left + PLOT_WIDTH}" y2="${py.toFixed(1)}" stroke="#e3e3e3"/>`)
    parts.push(text(MARGIN.left - 8, py + 4, formatY(y), 'font-size="12" text-anchor="end"'))
  }
  parts.push(`<rect x="${MARGIN.left}" y="${MARGIN.top}" width="${PLOT_WIDTH}" height="${PLOT_HEIGHT}" fill="none" stroke="#555"/>`)
  parts.push(text(MARGIN.left + PLOT_WIDTH / 2, HEIGHT - 16, xLabel, 'font-size="14" text-anchor="middle"'))
  const yTitleX = 18
  const yTitleY = MARGIN.top + PLOT_HEIGHT / 2
  parts.push(text(yTitleX, yTitleY, yLabel, `font-size="14" text-anchor="middle" transform="rotate(-90 ${yTitleX} ${yTitleY})"`))
  return parts
}

function legend (entries: ReadonlyArray<{ label: string, color: string, dashed?: boolean, swatch: 'line' | 'box' }>, corner: 'top-right' | 'bottom-right'): string[] {
  const rowHeight = 20
  const width = 12 + 34 + 7.6 * Math.max(...entries.map((entry) => entry.label.length))
  const height = 10 + rowHeight * entries.length
  const x = MARGIN.left + PLOT_WIDTH - width - 10
  const y = corner === 'top-right' ? MARGIN.top + 10 : MARGIN.top + PLOT_HEIGHT - height - 10
  const parts = [`<rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${height}" fill="white" fill-opacity="0.9" stroke="#999"/>`]
  entries.forEach((entry, index) => {
    const rowY = y + 15 + index * rowHeight
    parts.push(entry.swatch === 'line'
      ? `<line x1="${x + 8}" y1="${rowY}" x2="${x + 36}" y2="${rowY}" stroke="${entry.color}" stroke-width="2.5"${entry.dashed === true ? ' stroke-dasharray="7 4"' : ''}/>`
      : `<rect x="${x + 14}" y="${rowY - 6}" width="14" height="12" fill="${entry.color}"/>`)
    parts.push(text(x + 44, rowY + 4, entry.label, 'font-size="13"'))
  })
  return parts
}

function svg (parts: readonly string[]): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}">\n${parts.join('\n')}\n</svg>\n`
}

export interface LineChartOptions extends Titles {
  xMax: number
  yMax: number
  formatY: (y: number) => string
  series: readonly LineSeries[]
}

export function lineChart (options: LineChartOptions): string {
  const axes: Axes = { xMin: 0, xMax: options.xMax, yMin: 0, yMax: options.yMax }
  const parts = frame(axes, options, options.formatY)
  for (const series of options.series) {
    // A CDF is a step function: hold each value until the next point.
    const path = series.points.map(([x, y], index) => {
      const px = scaleX(axes, Math.min(x, axes.xMax)).toFixed(1)
      const py = scaleY(axes, y).toFixed(1)
      return index === 0 ? `M${px},${scaleY(axes, 0).toFixed(1)} L${px},${py}` : `H${px} V${py}`
    }).join(' ')
    const dash = series.dashed === true ? ' stroke-dasharray="7 4"' : ''
    parts.push(`<path d="${path}" fill="none" stroke="${series.color}" stroke-width="2.2"${dash}/>`)
  }
  parts.push(...legend(options.series.map((series) => ({ ...series, swatch: 'line' as const })), 'bottom-right'))
  return svg(parts)
}

export interface HistogramOptions extends Titles {
  binStart: number
  binWidth: number
  counts: readonly number[]
  barLabel: string
  barColor: string
  markers: readonly Marker[]
}

export function histogram (options: HistogramOptions): string {
  const xMax = options.binStart + options.binWidth * options.counts.length
  const tallest = Math.max(1, ...options.counts)
  const axes: Axes = { xMin: options.binStart, xMax, yMin: 0, yMax: tallest * 1.1 }
  const parts = frame(axes, options, (y) => String(y))
  options.counts.forEach((count, index) => {
    if (count === 0) return
    const left = scaleX(axes, options.binStart + index * options.binWidth)
    const right = scaleX(axes, options.binStart + (index + 1) * options.binWidth)
    const top = scaleY(axes, count)
    parts.push(`<rect x="${left.toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(0.5, right - left - 1).toFixed(1)}" height="${(scaleY(axes, 0) - top).toFixed(1)}" fill="${options.barColor}"/>`)
  })
  for (const marker of options.markers) {
    if (marker.x < axes.xMin || marker.x > axes.xMax) continue
    const px = scaleX(axes, marker.x).toFixed(1)
    parts.push(`<line x1="${px}" y1="${MARGIN.top}" x2="${px}" y2="${MARGIN.top + PLOT_HEIGHT}" stroke="${marker.color}" stroke-width="2" stroke-dasharray="6 4"/>`)
  }
  parts.push(...legend([
    { label: options.barLabel, color: options.barColor, swatch: 'box' },
    ...options.markers.map((marker) => ({ label: marker.label, color: marker.color, dashed: true, swatch: 'line' as const }))
  ], 'top-right'))
  return svg(parts)
}

export type MarkerShape = 'circle' | 'square' | 'triangle'

export interface ScatterPoint {
  x: number
  y: number
  /** Written beside the point. */
  label: string
  color: string
  shape: MarkerShape
  /** An outline only: a reference (e.g. a simulated limit) rather than a measurement. */
  hollow?: boolean
  /** Where the label goes beside the point (level with it by default), so that close points keep readable labels. */
  labelPosition?: 'level' | 'above' | 'below'
}

export interface ScatterChartOptions extends Titles {
  xMax: number
  yMin: number
  yMax: number
  formatY: (y: number) => string
  points: readonly ScatterPoint[]
  /** What each shape and outline means, for the legend. */
  legend: ReadonlyArray<{ label: string, shape: MarkerShape, hollow?: boolean }>
}

function markerPath (shape: MarkerShape, x: number, y: number, size: number): string {
  switch (shape) {
    case 'circle': return `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${size}"`
    case 'square': return `<rect x="${(x - size).toFixed(1)}" y="${(y - size).toFixed(1)}" width="${2 * size}" height="${2 * size}"`
    case 'triangle': return `<polygon points="${x.toFixed(1)},${(y - size * 1.2).toFixed(1)} ${(x - size * 1.1).toFixed(1)},${(y + size * 0.8).toFixed(1)} ${(x + size * 1.1).toFixed(1)},${(y + size * 0.8).toFixed(1)}"`
  }
}

function marker (shape: MarkerShape, x: number, y: number, color: string, hollow: boolean): string {
  const paint = hollow ? `fill="white" stroke="${color}" stroke-width="2"` : `fill="${color}" stroke="${color}"`
  return `${markerPath(shape, x, y, 6)} ${paint}/>`
}

/** Points with a label each, e.g. upstream calls per request against p90 for each configuration. */
export function scatterChart (options: ScatterChartOptions): string {
  const axes: Axes = { xMin: 0, xMax: options.xMax, yMin: options.yMin, yMax: options.yMax }
  const parts = frame(axes, options, options.formatY)
  for (const point of options.points) {
    const px = scaleX(axes, Math.min(point.x, axes.xMax))
    const py = scaleY(axes, Math.min(Math.max(point.y, axes.yMin), axes.yMax))
    parts.push(marker(point.shape, px, py, point.color, point.hollow === true))
    const labelOffset = { level: 4, above: -7, below: 16 }[point.labelPosition ?? 'level']
    parts.push(text(px + 10, py + labelOffset, point.label, `font-size="11.5" fill="${point.color}"`))
  }
  const rowHeight = 20
  const width = 12 + 34 + 7.2 * Math.max(...options.legend.map((entry) => entry.label.length))
  const height = 10 + rowHeight * options.legend.length
  const x = MARGIN.left + PLOT_WIDTH - width - 10
  const y = MARGIN.top + PLOT_HEIGHT - height - 10
  parts.push(`<rect x="${x.toFixed(1)}" y="${y}" width="${width.toFixed(1)}" height="${height}" fill="white" fill-opacity="0.9" stroke="#999"/>`)
  options.legend.forEach((entry, index) => {
    const rowY = y + 15 + index * rowHeight
    parts.push(marker(entry.shape, x + 22, rowY, '#444', entry.hollow === true))
    parts.push(text(x + 44, rowY + 4, entry.label, 'font-size="13"'))
  })
  return svg(parts)
}
