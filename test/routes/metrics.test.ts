import t from 'tap'
import { sample } from '../helpers/prometheus.js'
import { call, withService } from '../helpers/service.js'

t.test('a scripted scenario moves every counter by exactly what happened', async (t) => {
  // Request 1: attempt 1 succeeds at once. Request 2: every attempt hangs until its 400 ms deadline.
  const { service } = await withService(t, { script: (n) => n === 1 ? { kind: 'json', body: { time: 1 } } : { kind: 'hang' } })
  const before = await call(`${service.url}/metrics`)
  t.equal(before.status, 200)
  t.match(before.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.match(before.text, /# TYPE smart_requests_total counter/)

  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 200)
  t.equal((await call(`${service.url}/api/smart?timeout=400`)).status, 408)
  t.equal((await call(`${service.url}/api/smart?timeout=abc`)).status, 400)

  const { text } = await call(`${service.url}/metrics`)
  const expected: Record<string, number> = {
    'smart_requests_total{endpoint="smart",outcome="success"}': 1,
    'smart_requests_total{endpoint="smart",outcome="timeout"}': 1,
    'smart_requests_total{endpoint="smart",outcome="invalid"}': 1,
    'smart_requests_total{endpoint="smart",outcome="upstream_error"}': 0,
    'smart_upstream_attempts_total{endpoint="smart",result="success"}': 1,
    'smart_upstream_attempts_total{endpoint="smart",result="aborted"}': 3,
    smart_hedges_total: 1,
    'smart_request_duration_seconds_count{endpoint="smart",outcome="success"}': 1,
    'smart_request_duration_seconds_count{endpoint="smart",outcome="timeout"}': 1,
    'smart_request_duration_seconds_count{endpoint="smart",outcome="invalid"}': 1,
    'smart_upstream_attempt_duration_seconds_count{endpoint="smart",result="aborted"}': 3,
    'smart_deadline_overshoot_seconds_count{endpoint="smart"}': 1
  }
  for (const [series, value] of Object.entries(expected)) t.equal(sample(text, series), value, series)
  t.equal(sample(text, 'smart_deadline_overshoot_seconds_bucket{le="0.1",endpoint="smart"}'), 1, 'the 408 was less than 100 ms late')
  t.equal(sample(text, 'smart_request_duration_seconds_bucket{le="0.1",endpoint="smart",outcome="invalid"}'), 1, 'the 400 was answered within 100 ms')
  t.match(text, /process_open_fds \d+/, 'default process metrics are included')
})

t.test('failed attempts are counted by their reason', async (t) => {
  const { service } = await withService(t, {
    script: (n) => n === 1
      ? { kind: 'json', status: 500 }
      : n === 2 ? { kind: 'raw', body: 'oops' } : { kind: 'reset' }
  })
  t.equal((await call(`${service.url}/api/smart?timeout=1000`)).status, 502)
  const { text } = await call(`${service.url}/metrics`)
  t.equal(sample(text, 'smart_requests_total{endpoint="smart",outcome="upstream_error"}'), 1)
  t.equal(sample(text, 'smart_upstream_attempts_total{endpoint="smart",result="http_error"}'), 1)
  t.equal(sample(text, 'smart_upstream_attempts_total{endpoint="smart",result="invalid_json"}'), 1)
  t.equal(sample(text, 'smart_upstream_attempts_total{endpoint="smart",result="connection_error"}'), 1)
  t.equal(sample(text, 'smart_hedges_total'), 1, 'an early failure fires the hedge too')
})
