import t from 'tap'
import { HedgePause, pushbackMs } from '../../lib/pushback.js'

const NOW = Date.parse('2026-12-02T12:00:00Z')
const CAP = 30_000

t.test('429 and 503 with Retry-After in seconds ask for that pause', async (t) => {
  t.equal(pushbackMs(503, '1', NOW, CAP), 1000)
  t.equal(pushbackMs(429, '7', NOW, CAP), 7000)
  t.equal(pushbackMs(503, ' 2 ', NOW, CAP), 2000, 'header whitespace is not part of the value')
  t.equal(pushbackMs(503, '0', NOW, CAP), 0)
})

t.test('Retry-After as an HTTP-date asks for the time until then; a date already past asks for nothing more', async (t) => {
  t.equal(pushbackMs(503, 'Wed, 02 Dec 2026 12:00:05 GMT', NOW, CAP), 5000)
  t.equal(pushbackMs(429, 'Wed, 02 Dec 2026 11:59:00 GMT', NOW, CAP), 0)
  t.equal(pushbackMs(503, 'Wednesday, 02-Dec-26 12:00:03 GMT', NOW, CAP), 3000, 'RFC 850 form')
  t.equal(pushbackMs(503, 'Wed Dec  2 12:00:04 2026', NOW + new Date(NOW).getTimezoneOffset() * 60_000, CAP), 4000, 'asctime form')
})

t.test('the pause is capped by MAX_PUSHBACK_MS, and 0 turns pushback off', async (t) => {
  t.equal(pushbackMs(503, '3600', NOW, CAP), CAP)
  t.equal(pushbackMs(503, 'Thu, 03 Dec 2026 12:00:00 GMT', NOW, CAP), CAP)
  t.equal(pushbackMs(503, '1', NOW, 0), undefined)
})

t.test('other statuses, a missing Retry-After or one that reads as neither form ask for nothing', async (t) => {
  t.equal(pushbackMs(500, '1', NOW, CAP), undefined)
  t.equal(pushbackMs(502, '1', NOW, CAP), undefined)
  t.equal(pushbackMs(200, '1', NOW, CAP), undefined)
  t.equal(pushbackMs(503, undefined, NOW, CAP), undefined)
  for (const unreadable of ['soon', '-1', '1.5', '', '0x10', 'Dec 32nd']) t.equal(pushbackMs(503, unreadable, NOW, CAP), undefined, unreadable)
})

t.test('a hedge pause runs until the latest time any pushback asked for', async (t) => {
  const pause = new HedgePause()
  t.equal(pause.remainingMs(0), 0, 'no pause before any pushback')
  pause.pauseFor(1000, 100)
  t.equal(pause.remainingMs(600), 500)
  pause.pauseFor(100, 700)
  t.equal(pause.remainingMs(700), 400, 'a shorter pushback does not cut the pause in force')
  pause.pauseFor(2000, 900)
  t.equal(pause.remainingMs(900), 2000, 'a longer one extends it')
  t.equal(pause.remainingMs(2900), 0)
  t.equal(pause.remainingMs(5000), 0)
})
