import t from 'tap'
import { connect } from 'node:net'
import { startScriptedUpstream } from '../helpers/scripted-upstream.js'
import { startService } from '../helpers/service.js'

/** Splits raw HTTP/1.1 responses read from one keep-alive socket (bodies have a Content-Length). */
function parseResponses (raw: string): Array<{ status: number, headers: Record<string, string>, body: string }> {
  const responses = []
  let rest = raw
  while (rest.startsWith('HTTP/1.1')) {
    const headEnd = rest.indexOf('\r\n\r\n')
    const [statusLine = '', ...headerLines] = rest.slice(0, headEnd).split('\r\n')
    const headers = Object.fromEntries(headerLines.map((line) => {
      const colon = line.indexOf(':')
      return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()]
    }))
    const length = Number(headers['content-length'])
    responses.push({ status: Number(statusLine.split(' ')[1]), headers, body: rest.slice(headEnd + 4, headEnd + 4 + length) })
    rest = rest.slice(headEnd + 4 + length)
  }
  return responses
}

t.test('while closing, the request in flight finishes and a new one gets a JSON 503 with Retry-After', async (t) => {
  const upstream = await startScriptedUpstream(() => ({ kind: 'json', body: { time: 400 }, delayMs: 400 }))
  t.teardown(() => upstream.close())
  const service = await startService({ UPSTREAM_URL: upstream.url, HEDGE_REQUESTS: '0' })
  const socket = connect(Number(new URL(service.url).port), '127.0.0.1')
  let raw = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { raw += chunk })
  const ended = new Promise((resolve) => socket.on('close', resolve))

  socket.write('GET /api/smart?timeout=2000 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  await new Promise((resolve) => setTimeout(resolve, 100))
  const closed = service.app.close()
  await new Promise((resolve) => setTimeout(resolve, 50))
  socket.write('GET /api/smart?timeout=2000 HTTP/1.1\r\nHost: localhost\r\n\r\n')
  await closed
  await ended

  const [inFlight, late] = parseResponses(raw)
  t.equal(inFlight?.status, 200, 'the request in flight got its answer')
  t.same(JSON.parse(inFlight?.body ?? ''), { success: true, response: { time: 400 } })
  t.equal(late?.status, 503, 'the request that arrived while closing was refused')
  t.equal(late?.headers['retry-after'], '1')
  t.equal(late?.headers.connection, 'close')
  t.match(JSON.parse(late?.body ?? ''), { success: false, statusCode: 503, error: 'Service Unavailable', message: /shutting down/ })
  t.equal(upstream.requests.length, 1, 'the refused request never reached the upstream')
})
