/**
 * Runs the upstream simulator as a process of its own: the `simulator` container of docker-compose.yml,
 * or `npm run simulator` on a workstation. Configured by SIMULATOR_HOST, SIMULATOR_PORT and SIMULATOR_SEED.
 */
import { parseSimulatorEnv } from './env.js'
import { startSimulator, type RunningSimulator } from './simulator.js'

async function stop (simulator: RunningSimulator): Promise<void> {
  await simulator.close()
  process.exit(0)
}

async function run (): Promise<void> {
  const settings = parseSimulatorEnv(process.env)
  const simulator = await startSimulator(settings)
  process.stdout.write(`simulator listening on ${simulator.url} (seed ${settings.seed})\n`)
  // `once`: a second signal while closing falls back to Node's default and ends the process at once.
  process.once('SIGTERM', () => stop(simulator))
  process.once('SIGINT', () => stop(simulator))
}

run().catch((error: Error) => {
  process.stderr.write(`simulator: ${error.message}\n`)
  process.exit(1)
})
