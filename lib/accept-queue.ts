/**
 * How long new connections wait before the service even sees them.
 *
 * Node 20's libuv accepts one connection per turn of the event loop. When each turn is long (a busy loop
 * working through timers, connects and teardown), connections pile up in the kernel's accept queue faster
 * than they are taken from it, and wait there: the client's clock runs, the service's does not start until
 * the request is read. Event-loop delay does not show it (timers still fire every turn), so this reads the
 * queue itself and follows the connections in it until they are accepted.
 */
import { closeSync, openSync, readSync } from 'node:fs'

/** Linux lists every TCP socket of the network namespace here, the listening ones first. */
export const PROC_TCP_TABLES: readonly string[] = ['/proc/net/tcp', '/proc/net/tcp6']

/** The `st` column of a listening socket; for those, the `rx_queue` column is the accept queue's length. */
const LISTEN_STATE = '0A'

const CHUNK_BYTES = 16384
const chunk = Buffer.allocUnsafe(CHUNK_BYTES)

/**
 * Connections waiting in the accept queue of the socket listening on `port`, from Linux's /proc tables.
 * 0 where the tables cannot be read (other systems) or list no such socket.
 */
export function acceptQueueLength (port: number, tables: readonly string[] = PROC_TCP_TABLES): number {
  const portSuffix = ':' + port.toString(16).toUpperCase().padStart(4, '0')
  let queued = 0
  for (const table of tables) queued += queuedInTable(table, portSuffix)
  return queued
}

function queuedInTable (table: string, portSuffix: string): number {
  let fd: number
  try {
    fd = openSync(table, 'r')
  } catch {
    return 0
  }
  try {
    return scanListeningSockets(fd, portSuffix)
  } finally {
    closeSync(fd)
  }
}

/** Reads only as far as the listening sockets go: the table may list tens of thousands of connections after them. */
function scanListeningSockets (fd: number, portSuffix: string): number {
  let pending = ''
  for (;;) {
    const bytes = readSync(fd, chunk, 0, CHUNK_BYTES, null)
    if (bytes === 0) return 0
    const text = pending + chunk.toString('latin1', 0, bytes)
    const lastNewline = text.lastIndexOf('\n')
    pending = text.slice(lastNewline + 1)
    for (const line of text.slice(0, lastNewline).split('\n')) {
      // sl local_address rem_address st tx_queue:rx_queue ...; the header line has 'st' in that column.
      const [, localAddress = '', , state = '', queues = ''] = line.trim().split(/\s+/)
      if (state === 'st') continue
      if (state !== LISTEN_STATE) return 0
      if (localAddress.endsWith(portSuffix)) return parseInt(queues.slice(queues.indexOf(':') + 1), 16)
    }
  }
}

/**
 * How long the oldest connection in the accept queue has waited, at least, from samples of the queue's length
 * and of how many connections were accepted between two samples. The queue is first in, first out, so the
 * connections seen in it are followed as cohorts: the ones first seen at one sample leave it only after every
 * cohort seen before them. Connections that arrived and were accepted between two samples are counted against
 * the oldest cohort, which can only make the wait look shorter than it was, never longer.
 */
export class AcceptQueueWatch {
  /** Connections still queued, by the sample that first saw them, oldest first. */
  private readonly cohorts: Array<{ seenAtMs: number, waiting: number }> = []

  /** Records a sample taken at `nowMs` and returns the oldest connection's wait so far (0 if none waits). */
  sample (queued: number, acceptedSinceLastSample: number, nowMs: number): number {
    this.leave(acceptedSinceLastSample)
    let followed = 0
    for (const cohort of this.cohorts) followed += cohort.waiting
    if (queued > followed) this.cohorts.push({ seenAtMs: nowMs, waiting: queued - followed })
    // Fewer queued than followed: connections left without a 'connection' event (e.g. closed at once because
    // MAX_CLIENT_CONNECTIONS were open). They too were the oldest.
    else this.leave(followed - queued)
    const oldest = this.cohorts[0]
    return oldest === undefined ? 0 : nowMs - oldest.seenAtMs
  }

  /** `count` connections left the queue: the oldest ones. */
  private leave (count: number): void {
    let left = count
    while (left > 0 && this.cohorts.length > 0) {
      const oldest = this.cohorts[0] as { seenAtMs: number, waiting: number }
      const leaving = Math.min(left, oldest.waiting)
      oldest.waiting -= leaving
      left -= leaving
      if (oldest.waiting === 0) this.cohorts.shift()
    }
  }
}
