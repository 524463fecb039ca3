/** The value of one sample line of Prometheus text, e.g. `smart_requests_total{endpoint="smart",outcome="success"}`; 0 when absent. */
export function sample (text: string, series: string): number {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `))
  return line === undefined ? 0 : Number(line.slice(series.length + 1))
}
