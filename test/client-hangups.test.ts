import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { startScriptedUpstream } from './helpers/scripted-upstream.js'
import { call, startService } from './helpers/service.js'
import { sample } from './helpers/prometheus.js'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** When the client hangs up, relative to the hedge (300 ms after attempt 1). */
const PHASES = [
  { name: 'before the hedge', attemptsSeen: 1, extraWaitMs: 100 },
  { name: 'as the hedges arrive', attemptsSeen: 3, extraWaitMs: 0 },
  { name: 'well after the hedge', attemptsSeen: 3, extraWaitMs: 250 }
]

for (const phase of PHASES) {
  t.test(`a client hanging up ${phase.name}: every attempt closed within 50 ms, nothing claims success`, async (t) => {
    const upstream = await startScriptedUpstream(() => ({ kind: 'hang' }))
    const service = await startService({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'debug' })
    t.teardown(async () => {
      await service.app.close()
      await upstream.close()
    })
    const socket = connect(Number(new URL(service.url).port), '127.0.0.1')
    await once(socket, 'connect')
    socket.write('GET /api/smart?timeout=5000 HTTP/1.1\r\nHost: localhost\r\n\r\n')
    while (upstream.requests.length < phase.attemptsSeen) await sleep(5)
    await sleep(phase.extraWaitMs)
    const hungUpAt = upstream.now()
    socket.destroy()
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
