import t from 'tap'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { AcceptQueueWatch, acceptQueueLength } from '../../lib/accept-queue.js'

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode'

/** One line of /proc/net/tcp: `queue` is the rx_queue column, for a listening socket its accept queue. */
function tableLine (slot: number, localAddress: string, state: string, queue: number): string {
  const queues = `00000000:${queue.toString(16).toUpperCase().padStart(8, '0')}`
  return `${String(slot).padStart(4)}: ${localAddress} 00000000:0000 ${state} ${queues} 00:00000000 00000000     0        0 ${1000 + slot} 1 0000000000000000 100 0 0 10 0`
}

function writeTable (dir: string, name: string, lines: string[]): string {
  const path = join(dir, name)
  writeFileSync(path, [HEADER, ...lines].join('\n') + '\n')
  return path
}

t.test('acceptQueueLength reads the rx_queue of the socket listening on the port', async (t) => {
  const dir = t.testdir()
  // Port 8080 is 1F90 in the table's hexadecimal notation.
  const tcp = writeTable(dir, 'tcp', [
    tableLine(0, '0100007F:1F91', '0A', 3),
    tableLine(1, '0100007F:1F90', '0A', 7),
    tableLine(2, '0100007F:1F90', '01', 5)
  ])
  t.equal(acceptQueueLength(8080, [tcp]), 7)
  t.equal(acceptQueueLength(8081, [tcp]), 3)
  t.equal(acceptQueueLength(8082, [tcp]), 0, 'no socket listens on the port')
})

t.test('acceptQueueLength stops at the first socket that is not listening', async (t) => {
  const dir = t.testdir()
  const tcp = writeTable(dir, 'tcp', [
    tableLine(0, '0100007F:1F91', '0A', 3),
    tableLine(1, '0100007F:9C40', '06', 0),
    // Never listed this way by Linux (listening sockets come first): it proves the scan ends above.
    tableLine(2, '0100007F:1F90', '0A', 9)
  ])
  t.equal(acceptQueueLength(8080, [tcp]), 0)
})

t.test('acceptQueueLength adds IPv4 and IPv6 listeners on the port and reads tables longer than one chunk', async (t) => {
  const dir = t.testdir()
  const manyListeners = Array.from({ length: 400 }, (_, slot) => tableLine(slot, `0100007F:${(1000 + slot).toString(16).toUpperCase().padStart(4, '0')}`, '0A', 1))
  const tcp = writeTable(dir, 'tcp', [...manyListeners, tableLine(400, '00000000:1F90', '0A', 12)])
  const tcp6 = writeTable(dir, 'tcp6', [tableLine(0, '00000000000000000000000000000000:1F90', '0A', 30)])
  t.ok(manyListeners.join('\n').length > 3 * 16384, 'the IPv4 table spans several reads')
  t.equal(acceptQueueLength(8080, [tcp, tcp6]), 42)
  t.equal(acceptQueueLength(8080, [tcp, join(dir, 'missing')]), 12, 'a table that cannot be read counts as empty')
})

t.test('acceptQueueLength reads the kernel\'s own accept queue', { skip: process.platform !== 'linux' && 'the accept queue is read from Linux\'s /proc' }, async (t) => {
  // A listener whose event loop is blocked, so the connections stay in the kernel's accept queue.
  const child = fork('-e', [
    'const server = require("node:net").createServer().listen(0, "127.0.0.1", () => {' +
    '  process.send(server.address().port);' +
    '  setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10000), 20)' +
    '})'
  ], { execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  t.teardown(() => { child.kill('SIGKILL') })
  const [port] = await once(child, 'message') as [number]
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(acceptQueueLength(port), 0, 'nothing queued yet')
  const sockets: Socket[] = []
  for (let i = 0; i < 5; i++) sockets.push(connect(port, '127.0.0.1'))
  t.teardown(() => { for (const socket of sockets) socket.destroy() })
  await Promise.all(sockets.map((socket) => once(socket, 'connect')))
  t.equal(acceptQueueLength(port), 5, 'the five connections wait to be accepted')
})

t.test('AcceptQueueWatch: the oldest connection\'s wait, from queue lengths and accepted counts', async (t) => {
  const watch = new AcceptQueueWatch()
  t.equal(watch.sample(0, 0, 0), 0, 'an empty queue')
  t.equal(watch.sample(10, 0, 100), 0, 'ten connections seen for the first time have waited 0 ms as far as is known')
  t.equal(watch.sample(10, 0, 110), 10, 'none accepted since: they have waited 10 ms')
  t.equal(watch.sample(10, 4, 120), 20, 'four of them accepted, four new ones queued: the oldest six waited 20 ms')
  t.equal(watch.sample(4, 6, 130), 10, 'the first six accepted: the oldest left are the four seen at 120')
  t.equal(watch.sample(0, 4, 140), 0, 'all accepted')
})

t.test('AcceptQueueWatch: connections that leave unaccepted, or arrive and are accepted between samples', async (t) => {
  const watch = new AcceptQueueWatch()
  watch.sample(5, 0, 0)
  t.equal(watch.sample(2, 0, 10), 10, 'three left without being accepted: the two left are from the same sample')
  t.equal(watch.sample(0, 0, 20), 0)
  watch.sample(3, 0, 30)
  t.equal(watch.sample(0, 10, 40), 0, 'more accepted than were queued: the others came and went between samples')
  t.equal(watch.sample(1, 0, 50), 0, 'the next connection starts a new count')
})
