import t from 'tap'
import { call, withService } from './helpers/service.js'

t.test('without UPSTREAM_URL the service calls its built-in simulator', async (t) => {
  const { service } = await withService(t)
  t.match(service.app.upstream.url, /^http:\/\/127\.0\.0\.1:\d+\/$/)
  const statuses: number[] = []
  for (let i = 0; i < 6; i++) {
    const answer = await call(`${service.url}/api/smart?timeout=1000`)
    statuses.push(answer.status)
    t.equal(answer.json?.success, answer.status === 200)
  }
  t.ok(statuses.every((status) => [200, 408, 502].includes(status)), `statuses ${statuses.join(', ')}`)
  t.ok(statuses.filter((status) => status === 200).length >= 4, 'most answers succeed')
})

t.test('GET /health answers 200', async (t) => {
  const { service } = await withService(t, { env: { UPSTREAM_URL: 'http://127.0.0.1:9/' } })
  const answer = await call(`${service.url}/health`)
  t.equal(answer.status, 200)
  t.same(answer.json, { status: 'ok' })
})
