/**
 * Entry of the upstream's own process (see bench/upstreams.ts): `upstream-process.ts <kind> [<simulator profile>]`. It announces its URL over IPC and answers
 * requests for its counters; SIGTERM closes it.
 */
import { SIMULATOR_PROFILES, type SimulatorProfileName } from '../simulator/simulator.js'
import { startUpstreamServer, type UpstreamCounters, type UpstreamKind } from './upstream-servers.js'

export type UpstreamMessage =
  | { type: 'listening', url: string }
  | ({ type: 'counters' } & UpstreamCounters)

const UPSTREAM_KINDS: readonly string[] = ['instant', 'silent', 'simulator'] satisfies UpstreamKind[]

function isUpstreamKind (value: string | undefined): value is UpstreamKind {
  return value !== undefined && UPSTREAM_KINDS.includes(value)
}

function isProfileName (value: string): value is SimulatorProfileName {
  return Object.hasOwn(SIMULATOR_PROFILES, value)
}

function send (message: UpstreamMessage): void {
  process.send?.(message)
}

const kind = process.argv[2]
if (!isUpstreamKind(kind)) throw new Error(`unknown upstream kind ${kind}`)

const profile = process.argv[3] ?? 'exponea'
if (!isProfileName(profile)) throw new Error(`unknown simulator profile ${profile}`)

const upstream = await startUpstreamServer(kind, profile)
process.on('message', () => send({ type: 'counters', ...upstream.counters() }))
process.once('SIGTERM', () => {
  upstream.close().finally(() => process.exit(0))
})
send({ type: 'listening', url: upstream.url })
