import t from 'tap'
import { outcomeOf } from '../../plugins/telemetry.js'

t.test('every status an endpoint answers has its outcome; anything else is an error (a bug)', async (t) => {
  t.same([200, 400, 408, 499, 502, 503].map(outcomeOf), ['success', 'invalid', 'timeout', 'client_closed', 'upstream_error', 'overloaded'])
  t.equal(outcomeOf(500), 'error')
})
