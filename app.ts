import AutoLoad from '@fastify/autoload'
import fp from 'fastify-plugin'
import Fastify, { LogController, type FastifyHttpOptions, type FastifyInstance, type FastifyPluginAsync } from 'fastify'
import type { Server } from 'node:http'
import { join } from 'node:path'
import type { DestinationStream } from 'pino'
import { decimalMaximum } from './lib/decimal-maximum.js'
import type { Config } from './lib/config.js'
import type { ConfigPluginOptions } from './plugins/config.js'
import { requestIdOf } from './plugins/request-id.js'
import { clientErrorHandler } from './plugins/error-handler.js'

/**
 * How long a client may take to send its request (a GET: the request line and headers). A slow or stalled
 * sender would otherwise hold a connection for as long as it liked.
 */
export const REQUEST_RECEIVE_TIMEOUT_MS = 10_000

export type AppOptions = ConfigPluginOptions

/**
 * The root plugin: everything in `plugins/` (shared decorators and hooks), then every route in `routes/`,
 * whose folders give the URLs. Both `server.ts` and the fastify-cli dev server load it.
 */
const app: FastifyPluginAsync<AppOptions> = async (fastify, opts) => {
  await fastify.register(AutoLoad, { dir: join(import.meta.dirname, 'plugins'), options: opts })
  await fastify.register(AutoLoad, { dir: join(import.meta.dirname, 'routes'), options: opts })
}

export default app

/** Server options the app needs; fastify-cli reads this export too (`fastify start --options`). */
export const options: FastifyHttpOptions<Server> = {
  ajv: { plugins: [decimalMaximum] },
  // The caller's x-request-id (when acceptable) or a new UUID: on every log line, echoed, sent upstream.
  genReqId: requestIdOf,
  // The shutdown plugin answers requests that arrive while closing, in the service's JSON error shape.
  return503OnClosing: false,
  requestTimeout: REQUEST_RECEIVE_TIMEOUT_MS,
  // Node checks the receive timeouts on this interval (30 s by default), so it also bounds their precision.
  http: { headersTimeout: REQUEST_RECEIVE_TIMEOUT_MS, connectionsCheckingInterval: 1000 },
  // Requests Node's parser refuses (malformed, oversize headers, too slow) get the JSON error shape too.
  clientErrorHandler
}

/**
 * The production server: the app plus logging at the configured level, one summary line per request.
 * Logs go to stdout unless another destination is given.
 */
export function buildServer (config: Config, logDestination?: DestinationStream): FastifyInstance {
  const server = Fastify({
    ...options,
    logger: { level: config.LOG_LEVEL, stream: logDestination },
    // The routes log one summary line per request; Fastify's own two lines per request would be noise.
    logController: new LogController({ disableRequestLogging: true })
  })
  // Without encapsulation, so the error handler and decorators also cover routes added on the server.
  server.register(fp(app), { config })
  return server
}
