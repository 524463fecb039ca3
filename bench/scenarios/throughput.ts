/**
 * Throughput: an upstream that answers at once, 64 keep-alive connections from autocannon, against
 * (i) the service, (ii) the minimal got proxy, (iii) the upstream itself. The ratio service / minimal got is
 * the service's cost over a bare got call.
 *
 * The three are measured in interleaved slices (round 1: service, proxy, upstream; round 2: proxy, upstream,
 * service; ...), not one after the other: on a shared machine the background load drifts within a minute,
 * and interleaving spreads that drift evenly over the three instead of handing it to whichever ran last.
 */
import autocannon from 'autocannon'
import { integer, ms, ratio, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { startMinimalGotProxy, startService } from '../service.js'
import { startUpstream } from '../upstreams.js'

const CONNECTIONS = 64
const WARM_UP_SECONDS = 2
const ROUNDS = 5
const SLICE_SECONDS = 2

interface LoadTarget {
  name: string
  url: string
  slices: autocannon.RawResult[]
}

interface ThroughputRow {
  name: string
  /** Only 2xx answers count: a shed 503 is not throughput. */
  okPerSecond: number
  latencyP50Ms: number
  latencyP99Ms: number
  non2xx: number
  errors: number
}

function loadSlice (url: string, seconds: number): Promise<autocannon.RawResult> {
  return autocannon({ url, connections: CONNECTIONS, duration: seconds, skipAggregateResult: true })
}

function rowOf (target: LoadTarget): ThroughputRow {
  const merged = autocannon.aggregateResult(target.slices, { url: target.url, connections: CONNECTIONS })
  const seconds = target.slices.reduce((sum, slice) => sum + slice.duration, 0)
  const okAnswers = target.slices.reduce((sum, slice) => sum + slice['2xx'], 0)
  return {
    name: target.name,
    okPerSecond: okAnswers / seconds,
    latencyP50Ms: merged.latency.p50,
    latencyP99Ms: merged.latency.p99,
    non2xx: merged.non2xx,
    errors: merged.errors
  }
}

async function measureInterleaved (context: ScenarioContext, targets: LoadTarget[]): Promise<void> {
  for (const target of targets) {
    context.progress(`throughput: warm-up ${target.name} (${WARM_UP_SECONDS} s)`)
    await loadSlice(target.url, WARM_UP_SECONDS)
  }
  for (let round = 0; round < ROUNDS; round++) {
    context.progress(`throughput: round ${round + 1}/${ROUNDS}, ${SLICE_SECONDS} s each at ${CONNECTIONS} connections`)
    for (let index = 0; index < targets.length; index++) {
      const target = targets[(round + index) % targets.length] as LoadTarget
      target.slices.push(await loadSlice(target.url, SLICE_SECONDS))
    }
  }
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  const upstream = await startUpstream('instant')
  const servers = []
  let rows: ThroughputRow[]
  try {
    const service = await startService({ upstreamUrl: upstream.url, profileName: profileName(context, 'throughput') })
    servers.push(service)
    const proxy = await startMinimalGotProxy(upstream.url)
    servers.push(proxy)
    const targets: LoadTarget[] = [
      { name: 'service /api/smart?timeout=1000', url: `${service.origin}/api/smart?timeout=1000`, slices: [] },
      { name: 'minimal got proxy', url: `${proxy.origin}/`, slices: [] },
      { name: 'upstream direct', url: upstream.url, slices: [] }
    ]
    await measureInterleaved(context, targets)
    rows = targets.map(rowOf)
  } finally {
    await Promise.all(servers.map((server) => server.stop()))
    await upstream.stop()
  }
  const [serviceRow, proxyRow, directRow] = rows as [ThroughputRow, ThroughputRow, ThroughputRow]
  const serviceOverProxy = serviceRow.okPerSecond / proxyRow.okPerSecond
  const targets: Target[] = [{
    name: 'throughput: service ≥ 1.0× minimal got proxy (2xx req/s)',
    measured: ratio(serviceOverProxy),
    met: serviceOverProxy >= 1
  }]
  const printed = table(
    `throughput (instant upstream, ${CONNECTIONS} connections, ${ROUNDS} interleaved slices of ${SLICE_SECONDS} s each after ${WARM_UP_SECONDS} s warm-up)`,
    ['target', '2xx req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors'],
    rows.map((row) => [row.name, integer(row.okPerSecond), ms(row.latencyP50Ms, 0), ms(row.latencyP99Ms, 0), String(row.non2xx), String(row.errors)])
  ) + `\nratio service / minimal got proxy (2xx req/s): ${ratio(serviceOverProxy)}` +
    `\nratio minimal got proxy / upstream direct:      ${ratio(proxyRow.okPerSecond / directRow.okPerSecond)}`
  return { tables: [printed], targets, results: { rows, serviceOverProxy } }
}

export const throughput: Scenario = { name: 'throughput', run }
