import t from 'tap'
import { Agent } from 'node:http'
import { eventually } from './helpers/eventually.js'
import { startScriptedUpstream, type UpstreamBehaviour } from './helpers/scripted-upstream.js'
import { call, type ClientAnswer } from './helpers/service.js'
import { listeningUrl, runServer } from './helpers/server-process.js'

/**
 * A mixed upstream, fixed by request number: successes, failures and hangs. Nothing answers sooner than
 * ANSWER_DELAY_MS, so every request is still in flight when the signal comes.
 */
const ANSWER_DELAY_MS = 500
/**
 * Shutdown must not hold a 408 back (say, until the grace period). How precisely 200 deadlines that fall
 * together are kept is the benchmark's subject (npm run bench), not this test's: a wide margin.
 */
const DEADLINE_MARGIN_MS = 1000
function mixedUpstream (n: number): UpstreamBehaviour {
  switch (n % 5) {
    case 0: return { kind: 'json', body: { time: ANSWER_DELAY_MS }, delayMs: ANSWER_DELAY_MS }
    case 1: return { kind: 'json', body: { time: 700 }, delayMs: 700 }
    case 2: return { kind: 'json', status: 500, delayMs: ANSWER_DELAY_MS }
    case 3: return { kind: 'raw', body: 'not json', delayMs: ANSWER_DELAY_MS }
    default: return { kind: 'hang' }
  }
}

t.test('SIGTERM with 200 requests in flight: every one gets its proper answer and the process exits 0', async (t) => {
  const upstream = await startScriptedUpstream(mixedUpstream)
  t.teardown(() => upstream.close())
  // No drain: the requests must still be in flight when the server stops listening, the harder case.
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info', SHUTDOWN_DRAIN_MS: '0' })
  const url = await listeningUrl(t, server)
  // One connection per request, all open at once.
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity })
  t.teardown(() => agent.destroy())

  const inFlight: Array<Promise<ClientAnswer | Error>> = []
  let settled = 0
  const timeoutOf = (i: number): number => 600 + (i % 3) * 300 // 600, 900 or 1200 ms
  for (let i = 0; i < 200; i++) {
    const timeout = timeoutOf(i)
    const answer = call(`${url}/api/smart?timeout=${timeout}`, { agent }).catch((error: Error) => error)
    inFlight.push(answer.finally(() => { settled++ }))
  }
  // Every request has reached the handler once an attempt of it (known by its request id) reached the upstream.
  const requestsSeen = (): number => new Set(upstream.requests.map((request) => request.headers['x-request-id'])).size
  await eventually(() => requestsSeen() >= 200, 30_000)
  server.child.kill('SIGTERM')
  t.equal(settled, 0, 'all 200 were in flight when SIGTERM came')

  const answers = await Promise.all(inFlight)
  const statuses: Record<string, number> = {}
  for (const answer of answers) {
    const key = answer instanceof Error ? `error ${answer.message}` : String(answer.status)
    statuses[key] = (statuses[key] ?? 0) + 1
  }
  t.ok(answers.every((answer) => !(answer instanceof Error) && [200, 408, 502].includes(answer.status)),
    `every request got 200, 408 or 502, none was cut off: ${JSON.stringify(statuses)}`)
  t.ok(answers.every((answer) => !(answer instanceof Error) && answer.json?.success === (answer.status === 200)), 'JSON bodies')
  // Proper means on time too: shutting down must neither cut a deadline short nor hold the answer back.
  const offDeadline = answers.flatMap((answer, i) => !(answer instanceof Error) && answer.status === 408 &&
    (answer.elapsedMs < timeoutOf(i) || answer.elapsedMs > timeoutOf(i) + DEADLINE_MARGIN_MS)
    ? [`${Math.round(answer.elapsedMs)} ms for timeout=${timeoutOf(i)}`]
    : [])
  t.same(offDeadline, [], `every 408 came between its timeout and ${DEADLINE_MARGIN_MS} ms after it`)
  t.ok((statuses['200'] ?? 0) > 0 && (statuses['408'] ?? 0) > 0, 'the mix really included successes and timeouts')
  t.equal(await server.exited, 0)
})
