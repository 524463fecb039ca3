import t from 'tap'
import type { Socket } from 'node:net'
import { REQUEST_RECEIVE_TIMEOUT_MS } from '../../app.js'
import { openConnection, type RawResponse } from '../helpers/raw-http.js'
import { call, withService } from '../helpers/service.js'

/** Node checks the receive timeouts once a second (the server's connectionsCheckingInterval). */
const CHECKING_INTERVAL_MS = 1000

/** Writes `data` on a new connection, then reads until the server closes it. */
async function exchange (url: string, data: string, after?: (socket: Socket) => void):
Promise<{ answers: RawResponse[], raw: string, elapsedMs: number }> {
  const connection = await openConnection(url)
  const startedAt = performance.now()
  connection.socket.write(data)
  after?.(connection.socket)
  const answers = await connection.responses
  return { answers, raw: connection.raw(), elapsedMs: performance.now() - startedAt }
}

t.test('requests Node cannot parse get the JSON error shape, and the connection closes', async (t) => {
  const { service } = await withService(t)

  await t.test('a malformed request line: 400 naming the parser error', async (t) => {
    const { answers } = await exchange(service.url, 'GARBAGE\r\n\r\n')
    t.equal(answers.length, 1)
    t.equal(answers[0]?.status, 400)
    t.match(answers[0]?.headers['content-type'], /^application\/json/)
    t.equal(answers[0]?.headers.connection, 'close')
    t.same(JSON.parse(answers[0]?.body ?? ''), {
      success: false, statusCode: 400, error: 'Bad Request', message: 'Malformed HTTP request (HPE_INVALID_METHOD).'
    })
  })

  await t.test('headers over the 16 KiB limit: 431', async (t) => {
    const { answers } = await exchange(service.url,
      `GET /api/smart?timeout=1000 HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`)
    t.equal(answers[0]?.status, 431)
    t.same(JSON.parse(answers[0]?.body ?? ''), {
      success: false,
      statusCode: 431,
      error: 'Request Header Fields Too Large',
      message: 'The request line and headers are larger than the server accepts.'
    })
  })

  await t.test('a request that stalls half-way through its headers: 408 once the receive timeout passes', async (t) => {
    const { answers, elapsedMs } = await exchange(service.url, 'GET /api/smart?timeout=1000 HTTP/1.1\r\nHost: x\r\n')
    t.equal(answers[0]?.status, 408)
    t.same(JSON.parse(answers[0]?.body ?? ''), {
      success: false, statusCode: 408, error: 'Request Timeout', message: 'The request was not received in time.'
    })
    t.ok(elapsedMs >= REQUEST_RECEIVE_TIMEOUT_MS - 50, `not before the timeout (${Math.round(elapsedMs)} ms)`)
    t.ok(elapsedMs <= REQUEST_RECEIVE_TIMEOUT_MS + CHECKING_INTERVAL_MS + 500, `soon after it (${Math.round(elapsedMs)} ms)`)
  })

  await t.test('a client that resets half-way through its request gets nothing, and the service stays up', async (t) => {
    const { raw } = await exchange(service.url, 'GET /api/smart?timeout=1000 HTTP/1.1\r\nHost: x\r\n',
      (socket) => setTimeout(() => socket.resetAndDestroy(), 50))
    t.equal(raw, '')
    const answer = await call(`${service.url}/health`)
    t.equal(answer.status, 200)
  })
})
