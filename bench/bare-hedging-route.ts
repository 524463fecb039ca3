/**
 * The yardstick of the yardstick scenario: the hedging schedule of /api/smart with nothing else. A plain
 * Fastify app (no plugins, no schema, logger off) whose upstream client is bare node:http with one keep-alive
 * Agent. Everything the service does beyond this (validation, got, metrics, logs, load shedding, deferred
 * teardown) is its overhead.
 *
 * UPSTREAM_CLIENT=got makes each attempt one got stream instead (one got instance over the same Agent, no
 * retries, statuses judged by the route), with the route unchanged otherwise. It splits that overhead in two:
 * what got costs over bare node:http, and what the service's own machinery costs on top of got.
 *
 * Schedule: attempt 1 at once; HEDGE_REQUESTS more after HEDGE_DELAY_MS, or at once when attempt 1 fails
 * earlier. An attempt succeeds on 200 with a body that parses as JSON; the first success wins (200), all
 * attempts failed is a 502, the deadline (`timeout` ms from the handler's start) a 408. The attempts still
 * running are destroyed right after the answer, or when the client goes away before it.
 *
 * The bench runs it as its own process, compiled to plain JavaScript like the service (see compiledEntry);
 * by hand: PORT=8090 UPSTREAM_URL=http://127.0.0.1:8081/ [UPSTREAM_CLIENT=got] npx tsx bench/bare-hedging-route.ts
 */
import Fastify, { type FastifyReply } from 'fastify'
import got from 'got'
import { Agent, request } from 'node:http'

// SPEC §4's reference schedule (lib/constants.ts), written out: this file is compiled and run on its own, with
// no import from the service.
const HEDGE_DELAY_MS = 300
const HEDGE_REQUESTS = 2
const DEFAULT_TIMEOUT_MS = 60_000

const upstreamUrl = process.env.UPSTREAM_URL ?? ''
const port = Number(process.env.PORT ?? '0')
const upstreamClient = process.env.UPSTREAM_CLIENT ?? 'node:http'
if (upstreamUrl === '') throw new Error('UPSTREAM_URL is required')
if (upstreamClient !== 'node:http' && upstreamClient !== 'got') throw new Error('UPSTREAM_CLIENT is node:http or got')

// No maxSockets cap: every attempt gets a socket at once, as in the least a hedging client can do.
const agent = new Agent({ keepAlive: true })

/** What the route keeps of a running attempt: enough to stop it. */
interface Running {
  destroy (): void
}

/** One GET to the upstream; calls back once with its body on success, or with null on any failure. */
type Attempt = (done: (body: string | null) => void) => Running

function nodeHttpAttempt (done: (body: string | null) => void): Running {
  const req = request(upstreamUrl, { agent }, (res) => {
    const chunks: Buffer[] = []
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    res.on('error', () => done(null))
    res.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8')
      done(res.statusCode === 200 && parsesAsJson(body) ? body : null)
    })
  })
  req.on('error', () => done(null))
  req.end()
  return req
}

/** Created once; statuses other than 200 are judged by the attempt, not thrown by got. */
const client = got.extend({ agent: { http: agent }, retry: { limit: 0 }, throwHttpErrors: false })

function gotAttempt (done: (body: string | null) => void): Running {
  const stream = client.stream(upstreamUrl)
  const chunks: Buffer[] = []
  stream.on('data', (chunk: Buffer) => chunks.push(chunk))
  stream.on('error', () => done(null))
  stream.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8')
    done(stream.response?.statusCode === 200 && parsesAsJson(body) ? body : null)
  })
  return stream
}

const attempt: Attempt = upstreamClient === 'got' ? gotAttempt : nodeHttpAttempt

function parsesAsJson (text: string): boolean {
  try {
    JSON.parse(text)
    return true
  } catch {
    return false
  }
}

function sendError (reply: FastifyReply, statusCode: 408 | 502, error: string, message: string): void {
  reply.code(statusCode).send({ success: false, statusCode, error, message })
}

const app = Fastify({ logger: false })

app.get('/health', async () => ({ status: 'ok' }))

app.get<{ Querystring: { timeout?: string } }>('/api/smart', (req, reply) => {
  const timeoutMs = req.query.timeout === undefined ? DEFAULT_TIMEOUT_MS : Number(req.query.timeout)
  const running = new Set<Running>()
  let launched = 0
  let failed = 0
  let answered = false

  const finish = (send: () => void): void => {
    answered = true
    clearTimeout(deadlineTimer)
    clearTimeout(hedgeTimer)
    send()
    for (const loser of running) loser.destroy()
  }
  const launch = (): void => {
    launched++
    const started = attempt((body) => {
      if (!running.delete(started) || answered) return
      if (body !== null) return finish(() => reply.type('application/json').send(`{"success":true,"response":${body}}`))
      failed++
      if (launched === 1) hedge()
      else if (failed === launched) finish(() => sendError(reply, 502, 'Bad Gateway', 'Every upstream attempt failed.'))
    })
    running.add(started)
  }
  const hedge = (): void => {
    clearTimeout(hedgeTimer)
    for (let extra = 0; extra < HEDGE_REQUESTS; extra++) launch()
  }

  // Created before the hedge timer, so that when both fall due together the deadline wins, as in the service.
  const deadlineTimer = setTimeout(() => finish(() => sendError(reply, 408, 'Request Timeout', `No success within ${timeoutMs} ms.`)), timeoutMs)
  const hedgeTimer = setTimeout(hedge, HEDGE_DELAY_MS)
  // 'close' of the response comes after the answer too; only before it does it mean the client left.
  reply.raw.once('close', () => {
    if (!answered) finish(() => {})
  })
  launch()
})

await app.listen({ port, host: '127.0.0.1' })
process.once('SIGTERM', () => {
  agent.destroy()
  app.close().catch(() => {})
})
