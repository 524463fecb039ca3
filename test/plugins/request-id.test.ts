import t from 'tap'
import { call, withService } from '../helpers/service.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('an incoming x-request-id is echoed, logged on every line, and sent upstream on every attempt', async (t) => {
  const { service, upstream } = await withService(t, { script: () => ({ kind: 'hang' }), env: { LOG_LEVEL: 'debug' } })
  const answer = await call(`${service.url}/api/smart?timeout=400`, { headers: { 'x-request-id': 'order-42.retry:1' } })
  t.equal(answer.status, 408)
  t.equal(answer.headers['x-request-id'], 'order-42.retry:1')
  t.equal(upstream.requests.length, 3)
  for (const request of upstream.requests) t.equal(request.headers['x-request-id'], 'order-42.retry:1')
  const lines = service.logs.filter((line) => line.reqId !== undefined)
  t.ok(lines.length >= 4, 'one line per attempt and a summary')
  t.ok(lines.every((line) => line.reqId === 'order-42.retry:1'), 'every line of the request carries its id')
})

t.test('without an acceptable x-request-id, a UUID is generated', async (t) => {
  const { service, upstream } = await withService(t, { script: () => ({ kind: 'json' }) })
  const generated = await call(`${service.url}/api/smart?timeout=1000`)
  t.match(generated.headers['x-request-id'], UUID)
  t.equal(upstream.requests[0]?.headers['x-request-id'], generated.headers['x-request-id'])
  for (const unacceptable of ['has space', 'x'.repeat(129), 'semi;colon', '']) {
    const answer = await call(`${service.url}/health`, { headers: { 'x-request-id': unacceptable } })
    t.match(answer.headers['x-request-id'], UUID, JSON.stringify(unacceptable))
  }
  const other = await call(`${service.url}/nope`)
  t.match(other.headers['x-request-id'], UUID, 'on 404s too')
})
