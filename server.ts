import closeWithGrace from 'close-with-grace'
import { buildServer } from './app.js'
import { loadConfig } from './lib/config.js'

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

  // A second signal, or requests still running after SHUTDOWN_GRACE_MS, end the process at once (exit 1).
  closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
    if (err !== undefined) server.log.error({ err }, 'closing after an error')
    else server.log.info({ signal }, 'closing')
    await server.close()
  })

  await server.listen({ port: config.PORT, host: config.HOST })
}

await start()
