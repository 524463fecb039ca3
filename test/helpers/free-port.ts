import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'

/** A port that was free a moment ago: good enough on a loopback interface nobody else is racing for. */
export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/**
 * A port that is free now and stays free while an instance restarts on it. It is picked below Linux's
 * ephemeral range (32768 and up): a port from that range could be taken, while its instance is down, as the
 * local end of one of nginx's outgoing connections, and the restarted instance could not listen on it.
 * `host` is where it must be free: 0.0.0.0 for a port Docker publishes.
 */
export async function freeFixedPort (taken: number[], host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const port = 20000 + Math.floor(Math.random() * 12000)
    if (taken.includes(port)) continue
    const server = createServer()
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, host, () => resolve(true))
    })
    if (!bound) continue
    server.close()
    await once(server, 'close')
    return port
  }
  throw new Error('no free port found')
}
