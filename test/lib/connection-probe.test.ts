import t, { type Test } from 'tap'
import { once } from 'node:events'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConnectionProbe } from '../../lib/connection-probe.js'
import { eventually } from '../helpers/eventually.js'

/** A TCP server that counts the connections handed to it and keeps them open until closed. */
async function startServer (t: Test, host: string): Promise<{ server: Server, connections: Socket[] }> {
  const connections: Socket[] = []
  const server = createServer((socket) => {
    connections.push(socket)
    socket.on('error', () => {})
  })
  server.listen(0, host)
  await once(server, 'listening')
  t.teardown(() => {
    for (const socket of connections) socket.destroy()
    server.close()
  })
  return { server, connections }
}

/** Blocks the event loop, as a long turn of a busy service does. */
function busy (ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until) { /* busy on purpose */ }
}

/** Samples until the probe sent by the first sample has been seen; returns the wait the second sample reports. */
async function probeOnce (probe: ConnectionProbe, whileWaiting: () => void = () => {}): Promise<number> {
  probe.sample(performance.now())
  whileWaiting()
  await sleep(50)
  return probe.sample(performance.now()).waitMs
}

for (const host of ['127.0.0.1', '0.0.0.0', '::']) {
  t.test(`a server listening on ${host}: the probe measures how long a new connection waits, and closes it at once`, async (t) => {
    const { server, connections } = await startServer(t, host)
    const probe = new ConnectionProbe(server)
    t.teardown(() => probe.stop())
    const quick = await probeOnce(probe)
    t.ok(quick >= 0 && quick < 40, `an idle server takes the probe at once (${quick.toFixed(1)} ms)`)
    const slow = await probeOnce(probe, () => busy(120))
    t.ok(slow >= 120 && slow < 200, `behind a 120 ms turn of the event loop it waits that long (${slow.toFixed(1)} ms)`)
    t.equal(connections.length, 2, "the server's own handler saw both probes")
    t.ok(connections.every((socket) => socket.destroyed), 'both were closed as soon as the server got them')
  })
}

t.test('a probe still waiting is reported by its age', async (t) => {
  const { server } = await startServer(t, '127.0.0.1')
  const probe = new ConnectionProbe(server)
  t.teardown(() => probe.stop())
  // Whole milliseconds, so that (sentAt + 100) - sentAt is exactly 100 in floating point.
  const sentAt = Math.round(performance.now())
  t.same(probe.sample(sentAt), { probe: 0, waitMs: 0 }, 'nothing measured before the first probe')
  // Sampled again before the event loop turned: the server cannot have taken the probe yet.
  t.same(probe.sample(sentAt + 100), { probe: 1, waitMs: 100 }, 'the age of the first probe, which still waits')
  t.same(probe.sample(sentAt + 200), { probe: 1, waitMs: 200 }, 'sampled again: the same probe, older')
  await sleep(50)
  const taken = probe.sample(performance.now())
  t.equal(taken.probe, 1, 'the same probe, taken since,')
  t.ok(taken.waitMs < 100, 'reports its own wait')
  await sleep(50)
  t.equal(probe.sample(performance.now()).probe, 2, 'the next sample reports the next probe')
})

t.test('a probe the server drops at its connection limit ends its wait there', async (t) => {
  const { server, connections } = await startServer(t, '127.0.0.1')
  server.maxConnections = 1
  const holder = connect((server.address() as { port: number }).port, '127.0.0.1')
  holder.on('error', () => {})
  t.teardown(() => holder.destroy())
  await eventually(() => connections.length > 0, 5000)
  const probe = new ConnectionProbe(server)
  t.teardown(() => probe.stop())
  const wait = await probeOnce(probe)
  t.ok(wait >= 0 && wait < 40, `the drop ended the wait (${wait.toFixed(1)} ms)`)
  t.equal(connections.length, 1, 'only the first connection was handed over')
})

t.test('no probe while the server does not listen; a refused probe just ends', async (t) => {
  const server = createServer()
  const probe = new ConnectionProbe(server)
  t.same(probe.sample(performance.now()), { probe: 0, waitMs: 0 }, 'not listening: nothing to measure')
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  probe.sample(performance.now())
  server.close()
  await sleep(50)
  t.same(probe.sample(performance.now()), { probe: 1, waitMs: 0 }, 'a probe refused or reset while closing reports no wait')
  probe.stop()

  const unixServer = createServer()
  const path = `/tmp/connection-probe-${process.pid}.sock`
  unixServer.listen(path)
  await once(unixServer, 'listening')
  t.teardown(() => unixServer.close())
  const unixProbe = new ConnectionProbe(unixServer)
  t.same(unixProbe.sample(performance.now()), { probe: 0, waitMs: 0 })
  t.same(unixProbe.sample(performance.now()), { probe: 0, waitMs: 0 }, 'a server on a Unix socket gets no probe')
  unixProbe.stop()
})
