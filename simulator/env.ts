/**
 * Settings of the standalone simulator process (simulator/main.ts), read from its environment.
 * Kept apart from main.ts so that the parsing can be tested without starting a process.
 */
import { DEFAULT_SEED } from './simulator.js'

export interface SimulatorSettings {
  host: string
  port: number
  seed: number
}

export const DEFAULT_SIMULATOR_HOST = '127.0.0.1'
export const DEFAULT_SIMULATOR_PORT = 8081

const LARGEST_PORT = 65535
const LARGEST_SEED = 0xFFFF_FFFF

/**
 * An empty value counts as unset, so that a compose file can pass `${SIMULATOR_SEED:-}` through.
 * Throws an Error whose message names the offending variable and repeats its value.
 */
export function parseSimulatorEnv (env: Record<string, string | undefined>): SimulatorSettings {
  return {
    host: readHost(env, 'SIMULATOR_HOST', DEFAULT_SIMULATOR_HOST),
    port: readInteger(env, 'SIMULATOR_PORT', DEFAULT_SIMULATOR_PORT, LARGEST_PORT),
    seed: readInteger(env, 'SIMULATOR_SEED', DEFAULT_SEED, LARGEST_SEED)
  }
}

function readRaw (env: Record<string, string | undefined>, name: string): string | undefined {
  const value = env[name]
  return value === '' ? undefined : value
}

function readHost (env: Record<string, string | undefined>, name: string, fallback: string): string {
  const value = readRaw(env, name)
  if (value === undefined) return fallback
  if (/\s/.test(value)) {
    throw new Error(`${name} must be a host name or IP address without spaces, got ${JSON.stringify(value)}`)
  }
  return value
}

/** Decimal digits only: Number() would also accept ' 80', '1e3' and '0x50', which nobody means as a port. */
function readInteger (env: Record<string, string | undefined>, name: string, fallback: number, largest: number): number {
  const value = readRaw(env, name)
  if (value === undefined) return fallback
  const parsed = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN
  if (!(parsed <= largest)) {
    throw new Error(`${name} must be an integer from 0 to ${largest}, got ${JSON.stringify(value)}`)
  }
  return parsed
}
