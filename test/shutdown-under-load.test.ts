import t from 'tap'
import { Agent } from 'node:http'
import { startScriptedUpstream, type UpstreamBehaviour } from './helpers/scripted-upstream.js'
import { call, type ClientAnswer } from './helpers/service.js'
import { listeningUrl, runServer } from './helpers/server-process.js'

/** A mixed upstream, fixed by request number: quick and slow successes, failures, and hangs. */
function mixedUpstream (n: number): UpstreamBehaviour {
  switch (n % 5) {
    case 0: return { kind: 'json', body: { time: 50 }, delayMs: 50 }
    case 1: return { kind: 'json', body: { time: 400 }, delayMs: 400 }
    case 2: return { kind: 'json', status: 500 }
    case 3: return { kind: 'raw', body: 'not json' }
    default: return { kind: 'hang' }
  }
}

t.test('SIGTERM with 200 requests in flight: every one gets its proper answer and the process exits 0', async (t) => {
  const upstream = await startScriptedUpstream(mixedUpstream)
  t.teardown(() => upstream.close())
  const server = runServer({ UPSTREAM_URL: upstream.url, LOG_LEVEL: 'info' })
  const url = await listeningUrl(t, server)
  // One connection per request, all open at once.
  const agent = new Agent({ keepAlive: false, maxSockets: Infinity })
  t.teardown(() => agent.destroy())

  const inFlight: Array<Promise<ClientAnswer | Error>> = []
  for (let i = 0; i < 200; i++) {
    const timeout = 600 + (i % 3) * 300 // 600, 900 or 1200 ms
    inFlight.push(call(`${url}/api/smart?timeout=${timeout}`, { agent }).catch((error: Error) => error))
  }
  // Every request has reached the handler once an attempt of it (known by its request id) reached the upstream.
  const requestsSeen = (): number => new Set(upstream.requests.map((request) => request.headers['x-request-id'])).size
  while (requestsSeen() < 200) await new Promise((resolve) => setTimeout(resolve, 10))
  server.child.kill('SIGTERM')

  const answers = await Promise.all(inFlight)
  const statuses: Record<string, number> = {}
  for (const answer of answers) {
    const key = answer instanceof Error ? `error ${answer.message}` : String(answer.status)
    statuses[key] = (statuses[key] ?? 0) + 1
  }
  t.ok(answers.every((answer) => !(answer instanceof Error) && [200, 408, 502].includes(answer.status)),
    `every request got 200, 408 or 502, none was cut off: ${JSON.stringify(statuses)}`)
  t.ok(answers.every((answer) => !(answer instanceof Error) && answer.json?.success === (answer.status === 200)), 'JSON bodies')
  t.ok((statuses['200'] ?? 0) > 0 && (statuses['408'] ?? 0) > 0, 'the mix really included successes and timeouts')
  t.equal(await server.exited, 0)
})
