import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { freePort } from './helpers/free-port.js'
import { listeningUrl } from './helpers/server-process.js'
import { call } from './helpers/service.js'

interface PackageJson { scripts: Record<string, string> }

/**
 * `npm run dev` = tsc --watch plus the `dev:start` script (fastify-cli on the compiled app).
 * This runs `dev:start`'s own flags on the TypeScript source, without the file watcher, and checks
 * that fastify-cli picks up the app's server options, its plugins and routes, and prints pretty logs.
 */
t.test('the fastify-cli dev server runs the app with its options and pretty logs', async (t) => {
  const { scripts } = JSON.parse(readFileSync('package.json', 'utf8')) as PackageJson
  const devStart = scripts['dev:start'] ?? ''
  t.match(devStart, /^SHUTDOWN_DRAIN_MS=\$\{SHUTDOWN_DRAIN_MS:-0\} fastify start .*-w .*-o .*-P .*dist\/app\.js$/,
    'no drain (a restart on every change would wait for it), watch, app options, pretty logs')
  const port = String(await freePort())
  // The script's leading `NAME=${NAME:-default}` assignments, with their defaults, as the shell would set them.
  const words = devStart.split(' ')
  const commandStart = words.findIndex((word) => !/^\w+=/.test(word))
  const [assignments, command] = [words.slice(0, commandStart), words.slice(commandStart)]
  const scriptEnvironment = Object.fromEntries(assignments.map((assignment) => {
    const [, name = '', value = ''] = /^(\w+)=\$\{\w+:-(.*)\}$/.exec(assignment) ?? []
    return [name, value]
  }))
  const args = command.slice(2)
    .filter((arg) => arg !== '-w' && !arg.startsWith('--ignore-watch'))
    .map((arg) => arg.replace(/^\$\{PORT:-8080\}$/, port).replace('dist/app.js', 'app.ts'))
  const child = spawn(process.execPath, [...process.execArgv, 'node_modules/fastify-cli/cli.js', 'start', ...args], {
    env: { ...process.env, ...scriptEnvironment, UPSTREAM_URL: 'http://127.0.0.1:9/', FORCE_COLOR: '0' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = once(child, 'exit')
  t.teardown(() => { child.kill('SIGKILL') })

  await listeningUrl(t, { output: () => output })
  t.match(output, /INFO.*Server listening at http:\/\/127\.0\.0\.1:\d+/, 'pretty, human-readable log lines')
  const base = `http://127.0.0.1:${port}`
  t.equal((await call(`${base}/health`)).status, 200)
  const tooLarge = await call(`${base}/api/smart?timeout=99999999`)
  t.equal(tooLarge.json?.message, 'Timeout has to be at most 60000 milliseconds.', 'the Ajv keyword from the app options is active')
  t.equal((await call(`${base}/api/smart?timeout=1000`)).status, 502, 'routes and the upstream client are loaded')
  const stoppedAt = performance.now()
  child.kill('SIGTERM')
  const [code] = await exited
  // fastify-cli gives the app 500 ms to close before it exits 1: a drain would not fit.
  t.equal(code, 0, `closed by itself, ${Math.round(performance.now() - stoppedAt)} ms after SIGTERM`)
})
