import t from 'tap'
import Fastify from 'fastify'
import configPlugin from '../../plugins/config.js'

t.test('without a given config, the plugin reads and validates process.env', async (t) => {
  const saved = { ...process.env }
  t.teardown(() => { process.env = saved })
  process.env.HEDGE_DELAY_MS = '123'
  process.env.LOG_LEVEL = 'warn'
  const app = Fastify({ logger: { level: 'info' } })
  t.teardown(() => app.close())
  await app.register(configPlugin)
  t.equal(app.config.HEDGE_DELAY_MS, 123)
  t.equal(app.log.level, 'warn', 'LOG_LEVEL applies to the server logger')
})

t.test('an invalid process.env fails the plugin, naming the variable', async (t) => {
  const saved = { ...process.env }
  t.teardown(() => { process.env = saved })
  process.env.HEDGE_REQUESTS = 'many'
  const app = Fastify()
  app.register(configPlugin)
  await t.rejects(async () => { await app.ready() }, /HEDGE_REQUESTS must be an integer in decimal digits \(got "many"\)/)
})
