import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { eventually } from './helpers/eventually.js'
import { sample } from './helpers/prometheus.js'
import { openConnection } from './helpers/raw-http.js'
import { call, withService } from './helpers/service.js'

/** When the client hangs up, relative to the hedge (300 ms after attempt 1). */
const PHASES = [
  { name: 'before the hedge', attemptsSeen: 1, extraWaitMs: 100 },
  { name: 'as the hedges arrive', attemptsSeen: 3, extraWaitMs: 0 },
  { name: 'well after the hedge', attemptsSeen: 3, extraWaitMs: 250 }
]

for (const phase of PHASES) {
  t.test(`a client hanging up ${phase.name}: every attempt closed within 50 ms, nothing claims success`, async (t) => {
    const { service, upstream } = await withService(t, { script: () => ({ kind: 'hang' }), env: { LOG_LEVEL: 'debug' } })
    const client = await openConnection(service.url)
    client.get('/api/smart?timeout=5000')
    await eventually(() => upstream.requests.length >= phase.attemptsSeen, 5000)
    await sleep(phase.extraWaitMs)
    const hungUpAt = upstream.now()
    client.socket.destroy()
    await upstream.allClosed()

    t.equal(upstream.requests.length, phase.attemptsSeen, 'no attempt started after the hang-up')
    for (const request of upstream.requests) {
      const after = (request.closedAt ?? Infinity) - hungUpAt
      t.ok(after <= 50, `attempt ${request.n} closed ${after.toFixed(1)} ms after the hang-up`)
      t.ok(request.abandoned, `attempt ${request.n} was aborted, not answered`)
    }
    await sleep(400) // a hedge timer left running would fire here
    t.equal(upstream.requests.length, phase.attemptsSeen, 'still no new attempt')
    const lines = service.logs.filter((line) => line.reqId !== undefined)
    const summaries = lines.filter((line) => line.msg === 'api request')
    t.equal(summaries.length, 1, 'one summary line')
    t.match(summaries, [{ outcome: 'client_closed', statusCode: 499 }])
    t.notOk(lines.some((line) => line.outcome === 'success' || line.result === 'success'), 'no log line claims success')
    const metrics = (await call(`${service.url}/metrics`)).text
    t.equal(sample(metrics, 'smart_requests_total{endpoint="smart",outcome="client_closed"}'), 1)
    t.notMatch(metrics, /outcome="success"|result="success"/, 'no metric claims success')
  })
}
