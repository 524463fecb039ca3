import fp from 'fastify-plugin'
import { loadConfig, type Config } from '../lib/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface ConfigPluginOptions {
  /** An already validated configuration; when absent it is read from process.env. */
  config?: Config
}

/** Decorates `fastify.config` so every plugin and route reads the same validated settings. */
export default fp<ConfigPluginOptions>(async (fastify, opts) => {
  const config = opts.config ?? loadConfig()
  fastify.decorate('config', config)
  fastify.log.level = config.LOG_LEVEL
}, { name: 'config' })
