/**
 * How long a new connection waits before the service gets to it, measured by making one.
 *
 * Node's libuv (1.45 and later) accepts one connection per turn of the event loop. When the turns are long
 * (many calls in flight, deadlines falling due together), connections pile up in the kernel's accept queue
 * and wait there with the client's clock running, while timers still fire every turn and the event loop's
 * delay looks harmless. The queue is first in, first out, so a connection the service opens to its own
 * listening socket waits behind every one queued before it: the time from its connect() to the server's
 * 'connection' event is what a new client waits right now, accept queue and event-loop delay together.
 *
 * Reading the queue's length from /proc/net/tcp instead costs a scan of every socket of the host (14 ms per
 * read with 20 000 sockets in TIME_WAIT); a probe costs one loopback connection, reset without TIME_WAIT.
 */
import { connect, type AddressInfo, type Server, type Socket } from 'node:net'

const IPV4_MAPPED_PREFIX = /^::ffff:/

interface Probe {
  /** 1 for the first probe sent, 2 for the next, and so on. */
  serial: number
  socket: Socket
  startedAtMs: number
}

/** What a sample reports: which probe it measured (0 before the first), and its wait or, if it still waits, its age. */
export interface ProbeReading {
  probe: number
  waitMs: number
}

/** A wildcard address is reached through loopback; IPv4's works for a dual-stack '::' socket too. */
function probeHost (address: AddressInfo): string {
  return address.address === '0.0.0.0' || address.address === '::' ? '127.0.0.1' : address.address
}

export class ConnectionProbe {
  private outstanding: Probe | undefined
  /** The last probe sent that no longer waits, and its wait (0 for one refused or reset before the server got it). */
  private completed: ProbeReading = { probe: 0, waitMs: 0 }
  private sent = 0

  constructor (private readonly server: Server) {
    server.on('connection', this.onConnection)
    // Beyond server.maxConnections a new connection is closed instead of handed over: its wait ends there too.
    server.on('drop', this.onDrop)
  }

  /**
   * The wait of the latest probe, or the age of the one still waiting (a lower bound of its wait); then sends
   * the next probe unless one still waits. While one probe waits, every sample reports that same probe. A wait
   * of 0 while the server does not listen on a TCP port.
   */
  sample (nowMs: number): ProbeReading {
    if (this.outstanding !== undefined) return { probe: this.outstanding.serial, waitMs: nowMs - this.outstanding.startedAtMs }
    const reading = this.completed
    const address = this.server.address()
    if (address !== null && typeof address !== 'string') this.send(address, nowMs)
    return reading
  }

  stop (): void {
    this.server.off('connection', this.onConnection)
    this.server.off('drop', this.onDrop)
    this.outstanding?.socket.destroy()
    this.outstanding = undefined
  }

  private send (address: AddressInfo, nowMs: number): void {
    const socket = connect({ port: address.port, host: probeHost(address) })
    const probe: Probe = { serial: ++this.sent, socket, startedAtMs: nowMs }
    // The server resets the probe as soon as it sees it; a refused probe (the server closing) just ends.
    socket.on('error', () => this.end(probe))
    socket.on('close', () => this.end(probe))
    this.outstanding = probe
  }

  private end (probe: Probe): void {
    if (this.outstanding !== probe) return
    this.completed = { probe: probe.serial, waitMs: 0 }
    this.outstanding = undefined
  }

  private isProbe (remoteAddress: string | undefined, remotePort: number | undefined): boolean {
    const socket = this.outstanding?.socket
    // A dual-stack socket sees the probe's IPv4 address mapped into IPv6 (::ffff:127.0.0.1).
    return socket !== undefined && remotePort === socket.localPort && remoteAddress?.replace(IPV4_MAPPED_PREFIX, '') === socket.localAddress
  }

  /** Listens after the server's own handler (an HTTP server's parser setup), which sees the probe closed at once. */
  private readonly onConnection = (connection: Socket): void => {
    if (!this.isProbe(connection.remoteAddress, connection.remotePort)) return
    this.complete()
    // A reset leaves no socket in TIME_WAIT on either side.
    connection.resetAndDestroy()
  }

  private readonly onDrop = (data?: { remoteAddress?: string, remotePort?: number }): void => {
    if (this.isProbe(data?.remoteAddress, data?.remotePort)) this.complete()
  }

  private complete (): void {
    const probe = this.outstanding as Probe
    this.completed = { probe: probe.serial, waitMs: performance.now() - probe.startedAtMs }
    probe.socket.destroy()
    this.outstanding = undefined
  }
}
