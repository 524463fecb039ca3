import closeWithGrace from 'close-with-grace'
import { buildServer } from './app.js'
import { loadConfig } from './lib/config.js'
import { LARGEST_TIMER_MS } from './lib/constants.js'

/** Starts the service standalone: validated config, the root plugin, a listening socket, clean shutdown. */
async function start (): Promise<void> {
  let config
  try {
    config = loadConfig()
  } catch (error) {
    console.error(`Invalid configuration: ${(error as Error).message}`)
    process.exit(1)
  }

  const server = buildServer(config)

  // Closing drains for SHUTDOWN_DRAIN_MS, then gives requests in flight SHUTDOWN_GRACE_MS (plugins/shutdown.ts).
  // A second signal, or requests still running after both, end the process at once (exit 1).
  const closeDelayMs = Math.min(config.SHUTDOWN_DRAIN_MS + config.SHUTDOWN_GRACE_MS, LARGEST_TIMER_MS)
  closeWithGrace({ delay: closeDelayMs }, async ({ signal, err }) => {
    if (err !== undefined) server.log.error({ err }, 'closing after an error')
    else server.log.info({ signal }, 'closing')
    await server.close()
  })

  await server.listen({ port: config.PORT, host: config.HOST })
}

await start()
