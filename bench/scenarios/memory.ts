/**
 * Memory: 5000 requests in flight at once against a never-answering upstream, timeout=20000, so each holds
 * its client connection and, after the hedge delay, three upstream attempts: as many of them as the
 * service's cap allows (UPSTREAM_MAX_SOCKETS, its default here) on a socket of their own, the rest waiting
 * for one. RSS and heap before, at the peak, and a few seconds after every request ended; before and after
 * are taken right after a full GC that the bench asks the service for, so they show what is still referenced
 * (and what the allocator keeps), not garbage waiting to be collected. Load shedding is off: a shed request is
 * not in flight.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Answer } from '../http-client.js'
import { runOpenLoop } from '../open-loop.js'
import { openFileLimit, sampleProcess, startPeakSampler } from '../processes.js'
import { counts, mib, ratio, table, type Target } from '../report.js'
import { profileName, type Scenario, type ScenarioContext, type ScenarioReport } from '../scenario.js'
import { readMetrics, startCollectableService, type CollectableService } from '../service.js'
import { countBy } from '../stats.js'
import { loadConfig } from '../../lib/config.js'
import { sample } from '../../test/helpers/prometheus.js'
import { startUpstream } from '../upstreams.js'

const WANTED_IN_FLIGHT = 5000
/** Upstream sockets the service may hold at once, whatever the number of requests in flight. */
const UPSTREAM_SOCKETS = loadConfig({}).UPSTREAM_MAX_SOCKETS
/** Descriptors the service needs besides: its listener, event loop, stdio, /metrics scrapes, ... */
const FD_HEADROOM = 100
/** The requests are opened over two seconds: at once, most connections would wait on a full accept queue. */
const OPEN_RATE_PER_SECOND = 2500
const TIMEOUT_MS = 20_000
const SETTLE_AFTER_MS = 5000
const HEAP_POLL_MS = 1000
const RSS_LIMIT_BYTES = 300 * 1024 * 1024
const BACK_WITHIN = 1.1

interface MemorySample {
  rssBytes: number
  heapUsedBytes: number
  /** Memory V8 holds for its heap, used or not; unknown (NaN) at the peak, which is sampled from /proc and /metrics. */
  heapTotalBytes: number
  fds: number
}

/** The service's memory right after a full GC: live heap, and the RSS the process keeps after it. */
async function sampleAfterFullGc (service: CollectableService): Promise<MemorySample> {
  const usage = await service.collectGarbage()
  const proc = await sampleProcess(service.pid)
  return { rssBytes: proc.rssBytes, fds: proc.fds, heapUsedBytes: usage.heapUsed, heapTotalBytes: usage.heapTotal }
}

/** How many requests were open at the moment the last one was sent. */
function inFlightAtLastSend (answers: readonly Answer[]): number {
  const lastSentAt = Math.max(...answers.map((answer) => answer.sentAtMs))
  return answers.filter((answer) => answer.sentAtMs + answer.latencyMs >= lastSentAt).length
}

/**
 * 5000 in flight need a descriptor each in the service, plus its upstream sockets. Where the machine caps
 * open files lower (and forbids raising the cap), running out of descriptors would measure a crash, not
 * memory: fewer then.
 */
function inFlightFor (fileLimit: number): number {
  return Math.min(WANTED_IN_FLIGHT, fileLimit - FD_HEADROOM - UPSTREAM_SOCKETS)
}

async function run (context: ScenarioContext): Promise<ScenarioReport> {
  const upstream = await startUpstream('silent')
  try {
    const service = await startCollectableService({
      upstreamUrl: upstream.url,
      env: { OVERLOAD_MAX_WAIT_MS: '0' },
      profileName: profileName(context, 'memory')
    })
    try {
      const fileLimit = await openFileLimit(service.pid)
      const wanted = inFlightFor(fileLimit)
      context.progress(`memory: ${wanted} requests in flight (open-file limit ${fileLimit}), timeout=${TIMEOUT_MS}, never-answering upstream (~${(TIMEOUT_MS + SETTLE_AFTER_MS) / 1000 + 4} s)`)
      await runOpenLoop({ url: new URL('/api/smart?timeout=50', service.origin), ratePerSecond: 200, durationMs: 1000, maxWaitMs: 3000 })
      await sleep(500)
      const before = await sampleAfterFullGc(service)
      const sampler = startPeakSampler(service.pid, 250)
      let peakHeap = 0
      let peakUpstreamSockets = 0
      const heapPoller = setInterval(() => {
        readMetrics(service.origin).then((text) => { peakHeap = Math.max(peakHeap, sample(text, 'nodejs_heap_size_used_bytes')) }, () => {})
        upstream.counters().then((counters) => { peakUpstreamSockets = Math.max(peakUpstreamSockets, counters.openSockets) }, () => {})
      }, HEAP_POLL_MS)
      const load = await runOpenLoop({
        url: new URL(`/api/smart?timeout=${TIMEOUT_MS}`, service.origin),
        ratePerSecond: OPEN_RATE_PER_SECOND,
        durationMs: wanted / OPEN_RATE_PER_SECOND * 1000,
        maxWaitMs: TIMEOUT_MS + 10_000,
        onAllSent: () => context.progress(`memory: all ${wanted} sent; waiting for their deadlines`)
      })
      clearInterval(heapPoller)
      const peakProc = await sampler.stop()
      await sleep(SETTLE_AFTER_MS)
      const after = await sampleAfterFullGc(service)
      // Every request of this scenario is a GET /api/smart.
      const connectionErrors = sample(await readMetrics(service.origin), 'smart_upstream_attempts_total{endpoint="smart",result="connection_error"}')
      const peak: MemorySample = { rssBytes: peakProc.rssBytes, fds: peakProc.fds, heapUsedBytes: peakHeap, heapTotalBytes: Number.NaN }
      const statuses = countBy(load.answers, (answer) => answer.error ?? String(answer.status))
      const inFlight = inFlightAtLastSend(load.answers)
      const afterOverBefore = after.rssBytes / before.rssBytes
      const heapAfterOverBefore = after.heapUsedBytes / before.heapUsedBytes
      const targets: Target[] = [
        { name: 'memory: peak RSS ≤ 300 MiB', measured: `${mib(peak.rssBytes)} MiB`, met: peak.rssBytes <= RSS_LIMIT_BYTES },
        { name: 'memory: live heap after within 10% of before (full GC)', measured: ratio(heapAfterOverBefore), met: heapAfterOverBefore <= BACK_WITHIN },
        { name: 'memory: RSS after within 10% of before (full GC)', measured: ratio(afterOverBefore), met: afterOverBefore <= BACK_WITHIN }
      ]
      const row = (name: string, value: MemorySample): string[] =>
        [name, mib(value.rssBytes), mib(value.heapUsedBytes), Number.isNaN(value.heapTotalBytes) ? '-' : mib(value.heapTotalBytes), String(value.fds)]
      const printed = table(`memory (${inFlight} requests in flight at once, timeout=${TIMEOUT_MS}, never-answering upstream)`,
        ['moment', 'RSS MiB', 'heap used MiB', 'V8 heap held MiB', 'open fds'],
        [row('before (after a full GC)', before), row('peak', peak), row(`${SETTLE_AFTER_MS / 1000} s after the last answer (after a full GC)`, after)]
      ) + `\nRSS after / before: ${ratio(afterOverBefore)}; live heap after / before: ${ratio(heapAfterOverBefore)}` +
        `\nupstream sockets open at the peak: ${peakUpstreamSockets}; service open-file limit: ${fileLimit}; ` +
        `attempts failed with a connection error: ${connectionErrors}` +
        `\nanswers: ${counts(statuses)}` +
        (wanted < WANTED_IN_FLIGHT ? `\n(${wanted}, not ${WANTED_IN_FLIGHT}: the service may open only ${fileLimit} files on this machine)` : '')
      return {
        tables: [printed],
        targets,
        results: { inFlight, before, peak, after, afterOverBefore, heapAfterOverBefore, peakUpstreamSockets, fileLimit, connectionErrors, statuses }
      }
    } finally {
      await service.stop()
    }
  } finally {
    await upstream.stop()
  }
}

export const memory: Scenario = { name: 'memory', run }
