import t from 'tap'
import { parseResponses } from './raw-http.js'

const response = (body: string, extraHeaders = ''): string =>
  `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n${extraHeaders}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`

t.test('responses on one connection are split by their Content-Length, a partial one left out', async (t) => {
  const raw = Buffer.from(response('{"n":1}') + response('{"n":"é"}') + response('{"n":3}').slice(0, -2))
  t.same(parseResponses(raw), [
    { status: 200, headers: { 'content-type': 'application/json', 'content-length': '7' }, body: '{"n":1}' },
    { status: 200, headers: { 'content-type': 'application/json', 'content-length': '10' }, body: '{"n":"é"}' }
  ], 'the length counts bytes, not characters')
  t.same(parseResponses(Buffer.from('HTTP/1.1 200 OK\r\nContent-Len')), [], 'headers still coming')
  t.same(parseResponses(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n\r\n')), [], 'not HTTP')
})

t.test('a repeated header keeps every value', async (t) => {
  const [parsed] = parseResponses(Buffer.from(response('{}', 'Vary: Origin\r\nVary: Accept-Encoding\r\n')))
  t.equal(parsed?.headers.vary, 'Origin, Accept-Encoding')
})

t.test('without a Content-Length the body runs to the end of the connection', async (t) => {
  const raw = Buffer.from('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n{"partial":')
  t.same(parseResponses(raw), [], 'not complete while the connection is open')
  t.same(parseResponses(raw, true), [{ status: 400, headers: { connection: 'close' }, body: '{"partial":' }])
})
