/**
 * Runs the upstream simulator as a process of its own: the `simulator` container of docker-compose.yml,
 * or `npm run simulator` on a workstation. Configured by SIMULATOR_HOST, SIMULATOR_PORT, SIMULATOR_SEED and
 * SIMULATOR_PROFILE.
 */
import closeWithGrace from 'close-with-grace'
import { parseSimulatorEnv } from './env.js'
import { SIMULATOR_PROFILES, startSimulator } from './simulator.js'

/** How long closing may take before the process exits anyway, with exit code 1. */
const CLOSE_DELAY_MS = 5000

async function run (): Promise<void> {
  const settings = parseSimulatorEnv(process.env)
  const simulator = await startSimulator({
    ...settings,
    profile: SIMULATOR_PROFILES[settings.profile],
    log: (line) => process.stdout.write(`${line}\n`)
  })
  process.stdout.write(`simulator listening on ${simulator.url} (seed ${settings.seed}, profile ${settings.profile})\n`)
  // SIGTERM or SIGINT close it and exit 0; a second signal, or closing for longer than CLOSE_DELAY_MS, exit 1 at once.
  closeWithGrace({ delay: CLOSE_DELAY_MS }, async () => { await simulator.close() })
}

run().catch((error: Error) => {
  process.stderr.write(`simulator: ${error.message}\n`)
  process.exit(1)
})
