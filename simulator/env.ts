/**
 * Settings of the standalone simulator process (simulator/main.ts), read from its environment the way the
 * service reads its own (lib/environment.ts). Kept apart from main.ts so that they can be tested without
 * starting a process.
 */
import { Type } from '@sinclair/typebox'
import { readEnvironment } from '../lib/environment.js'
import { DEFAULT_SEED, LARGEST_SEED, SIMULATOR_PROFILES, type SimulatorProfileName } from './simulator.js'

export interface SimulatorSettings {
  host: string
  port: number
  seed: number
  profile: SimulatorProfileName
}

export const DEFAULT_SIMULATOR_HOST = '127.0.0.1'
export const DEFAULT_SIMULATOR_PORT = 8081

export const SimulatorEnvSchema = Type.Object({
  SIMULATOR_HOST: Type.String({
    pattern: '^\\S+$',
    default: DEFAULT_SIMULATOR_HOST,
    description: 'a host name or IP address without spaces'
  }),
  SIMULATOR_PORT: Type.Integer({ minimum: 0, maximum: 65535, default: DEFAULT_SIMULATOR_PORT }),
  SIMULATOR_SEED: Type.Integer({ minimum: 0, maximum: LARGEST_SEED, default: DEFAULT_SEED }),
  SIMULATOR_PROFILE: Type.Union(
    Object.keys(SIMULATOR_PROFILES).map((name) => Type.Literal(name as SimulatorProfileName)),
    { default: 'exponea' }
  )
})

/**
 * An empty value counts as unset, so that a compose file can pass `${SIMULATOR_SEED:-}` through.
 * Throws an Error whose message names each offending variable and repeats its value.
 */
export function parseSimulatorEnv (env: Record<string, string | undefined>): SimulatorSettings {
  const settings = readEnvironment(SimulatorEnvSchema, env, { emptyMeansUnset: true })
  return { host: settings.SIMULATOR_HOST, port: settings.SIMULATOR_PORT, seed: settings.SIMULATOR_SEED, profile: settings.SIMULATOR_PROFILE }
}
