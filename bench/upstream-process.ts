/**
 * Entry of the upstream's own process (see bench/upstreams.ts). It announces its URL over IPC and answers
 * requests for its counters; SIGTERM closes it.
 */
import { startUpstreamServer, type UpstreamKind } from './upstream-servers.js'

export type UpstreamMessage =
  | { type: 'listening', url: string }
  | { type: 'counters', requests: number, openSockets: number }

const UPSTREAM_KINDS: readonly string[] = ['instant', 'silent', 'simulator'] satisfies UpstreamKind[]

function isUpstreamKind (value: string | undefined): value is UpstreamKind {
  return value !== undefined && UPSTREAM_KINDS.includes(value)
}

function send (message: UpstreamMessage): void {
  process.send?.(message)
}

const kind = process.argv[2]
if (!isUpstreamKind(kind)) throw new Error(`unknown upstream kind ${kind}`)

const upstream = await startUpstreamServer(kind)
process.on('message', () => send({ type: 'counters', ...upstream.counters() }))
process.once('SIGTERM', () => {
  upstream.close().finally(() => process.exit(0))
})
send({ type: 'listening', url: upstream.url })
