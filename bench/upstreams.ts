/**
 * Starts a scripted upstream in a third process, apart from the load generator and the service.
 *
 * Why a process of its own: at 1000 req/s with three attempts each, the upstream accepts 3000 connections a
 * second. In the load generator's process that work would delay its timers and response callbacks, and the
 * delay would be booked as lateness of the service. On its own, the upstream competes only for CPU.
 */
import { once } from 'node:events'
import { spawnNode, typeScriptEntry } from './processes.js'
import type { UpstreamMessage } from './upstream-process.js'
import type { SimulatorProfileName } from '../simulator/simulator.js'
import type { UpstreamCounters, UpstreamKind } from './upstream-servers.js'

export interface UpstreamProcess {
  readonly url: string
  readonly pid: number
  counters (): Promise<UpstreamCounters>
  stop (): Promise<void>
}

/** `profileName` chooses the simulator's profile (SIMULATOR_PROFILE); the other kinds have none. */
export async function startUpstream (kind: UpstreamKind, profileName: SimulatorProfileName = 'exponea'): Promise<UpstreamProcess> {
  const started = spawnNode({ nodeArgs: [...typeScriptEntry('upstream-process.ts'), kind, profileName], ipc: true })
  const { child } = started
  const [first] = await Promise.race([
    once(child, 'message') as Promise<[UpstreamMessage]>,
    once(child, 'exit').then(() => { throw new Error(`the ${kind} upstream exited before listening`) })
  ])
  if (first.type !== 'listening') throw new Error(`unexpected first message from the upstream: ${first.type}`)

  // One question at a time: the answer to a counters request is simply the next message.
  let queue: Promise<unknown> = Promise.resolve()
  const ask = async (): Promise<UpstreamCounters> => {
    const answer = once(child, 'message') as Promise<[UpstreamMessage]>
    child.send('counters')
    const [message] = await answer
    if (message.type !== 'counters') throw new Error(`unexpected message from the upstream: ${message.type}`)
    const { type: _type, ...counters } = message
    return counters
  }
  const counters = (): Promise<UpstreamCounters> => {
    const next = queue.then(ask)
    queue = next.catch(() => {})
    return next
  }
  return { url: first.url, pid: started.pid, counters, stop: () => started.stop() }
}
