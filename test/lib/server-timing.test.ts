import t from 'tap'
import { serverTimingHeader } from '../../lib/server-timing.js'

t.test('total first, then each attempt with its duration and how it ended', async (t) => {
  t.equal(serverTimingHeader(412.34, [
    { attempt: 1, startedAt: 0.2, endedAt: 412.3, result: 'aborted' },
    { attempt: 2, startedAt: 300.5, endedAt: 410.9, result: 'success' },
    { attempt: 3, startedAt: 300.6, endedAt: 305.1, result: 'http_error', detail: 'status 500' }
  ]), 'total;dur=412.3, attempt1;dur=412.1;desc="aborted", attempt2;dur=110.4;desc="200", attempt3;dur=4.5;desc="http_error"')
})

t.test('an answer without attempts (a rejected timeout) has the total only', async (t) => {
  t.equal(serverTimingHeader(0.84, []), 'total;dur=0.8')
})
