/**
 * The benchmark suite: `npm run bench` (build, then every scenario in sequence), or
 *   tsx bench/run.ts [--only throughput|yardstick|deadline|hedged-tail|policies|memory] [--profile] [--node <path>]
 * Progress goes to stderr, the report to stdout; the numbers also go to bench/results.json and the plots to
 * bench/plots/. With --profile, every service process writes a CPU profile to bench/profiles/<phase>/.
 * With --node, every process under test (service, yardsticks, upstreams) runs on that node executable, while
 * the load generator stays on the bench's own; when its major version differs from the bench's, the numbers
 * go to bench/results-node<major>.json and the plots to bench/plots/node<major>/ instead, so that such a run
 * never overwrites the default one.
 */
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { cpus, loadavg, totalmem } from 'node:os'
import { join } from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { openFileLimit, raiseFileLimitScript, REPO_ROOT, setNodeUnderTest } from './processes.js'
import { targetsTable, type Target } from './report.js'
import type { Scenario, ScenarioContext } from './scenario.js'
import { deadline } from './scenarios/deadline.js'
import { hedgedTail } from './scenarios/hedged-tail.js'
import { memory } from './scenarios/memory.js'
import { policies } from './scenarios/policies.js'
import { throughput } from './scenarios/throughput.js'
import { yardstick } from './scenarios/yardstick.js'

const SCENARIOS: readonly Scenario[] = [throughput, yardstick, deadline, hedgedTail, policies, memory]

interface Machine {
  cpuModel: string
  cores: number
  memoryGiB: number
  /** The bench's own Node: the load generator's. */
  node: string
  /** The Node the processes under test run on (`<executable> --version`). */
  nodeUnderTest: string
  loadAverageAtStart: number[]
}

async function describeMachine (nodeUnderTest: string): Promise<Machine> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown'
  return {
    cpuModel: model.trim(),
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    node: process.version,
    nodeUnderTest,
    loadAverageAtStart: loadavg().map((load) => Math.round(load * 100) / 100)
  }
}

/** Wrong command-line arguments: reported in one line, without a stack trace. */
class UsageError extends Error {}

function chooseScenarios (only: string | undefined): readonly Scenario[] {
  if (only === undefined) return SCENARIOS
  const chosen = SCENARIOS.filter((scenario) => scenario.name === only)
  if (chosen.length === 0) {
    throw new UsageError(`unknown scenario "${only}"; choose one of ${SCENARIOS.map((scenario) => scenario.name).join(', ')}`)
  }
  return chosen
}

interface CommandLine {
  only: string | undefined
  profile: boolean
  /** The node executable of the processes under test, when not the bench's own. */
  node: string | undefined
}

function parseCommandLine (): CommandLine {
  try {
    const { values } = parseArgs({
      options: { only: { type: 'string' }, profile: { type: 'boolean', default: false }, node: { type: 'string' } }
    })
    return { only: values.only, profile: values.profile === true, node: values.node }
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error))
  }
}

/** `<executable> --version`, e.g. 'v24.22.3'; a path that does not run is a usage error. */
async function nodeVersion (executable: string): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)(executable, ['--version'])
    return stdout.trim()
  } catch (error) {
    throw new UsageError(`--node ${executable}: ${error instanceof Error ? error.message : String(error)}`)
  }
}

function majorOf (version: string): number {
  return Number(/^v(\d+)\./.exec(version)?.[1] ?? Number.NaN)
}

/**
 * Where this run's numbers and plots go, relative to the repository root: the usual places when the processes
 * under test run on the bench's own major version of Node, a name of their own otherwise.
 */
function outputPaths (nodeUnderTest: string): { results: string, plotsDir: string } {
  const major = majorOf(nodeUnderTest)
  if (major === majorOf(process.version)) return { results: 'bench/results.json', plotsDir: 'bench/plots' }
  return { results: `bench/results-node${major}.json`, plotsDir: `bench/plots/node${major}` }
}

/** Set in the environment of the copy of the bench started with a raised open-file limit. */
const RAISED_MARK = 'SMART_BENCH_FILE_LIMIT_RAISED'
/** The load generator holds up to 5000 sockets itself (memory scenario). */
const GENERATOR_FILE_LIMIT = 8192

/**
 * Node cannot raise its own open-file limit. When it is too low for the load generator, the bench runs
 * itself again under bash with the limit raised, and exits with that copy's exit code.
 */
async function rerunWithRaisedFileLimit (): Promise<boolean> {
  if (process.env[RAISED_MARK] !== undefined || await openFileLimit(process.pid) >= GENERATOR_FILE_LIMIT) return false
  const child = spawn('bash', ['-c', raiseFileLimitScript(), 'bash', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [RAISED_MARK]: '1' }
  })
  const [code] = await once(child, 'exit') as [number | null]
  process.exitCode = code ?? 1
  return true
}

async function main (): Promise<void> {
  if (await rerunWithRaisedFileLimit()) return
  const commandLine = parseCommandLine()
  const scenarios = chooseScenarios(commandLine.only)
  const nodeUnderTest = commandLine.node === undefined ? process.version : await nodeVersion(commandLine.node)
  if (commandLine.node !== undefined) setNodeUnderTest(commandLine.node)
  const output = outputPaths(nodeUnderTest)
  const startedAt = Date.now()
  const context: ScenarioContext = {
    cpuProfile: commandLine.profile,
    plotsDir: output.plotsDir,
    progress: (message) => process.stderr.write(`[${((Date.now() - startedAt) / 1000).toFixed(0).padStart(3)} s] ${message}\n`)
  }
  const machine = await describeMachine(nodeUnderTest)
  const packageJson = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }
  console.log(`# smart-api-requester ${packageJson.version} benchmark, ${new Date().toISOString()}`)
  console.log(`machine: ${machine.cpuModel}, ${machine.cores} cores, ${machine.memoryGiB} GiB; load generator on Node ${machine.node}; ` +
    `load average at start ${machine.loadAverageAtStart.join(' ')}`)
  console.log(`runtime under test (service, yardsticks, upstreams): Node ${machine.nodeUnderTest}` +
    (commandLine.node === undefined ? ' (the bench\'s own)' : ` (--node ${commandLine.node})`) +
    `; numbers to ${output.results}, plots to ${output.plotsDir}/`)
  if (context.cpuProfile) {
    console.log('CPU profiles of the service: bench/profiles/<phase>/*.cpuprofile (the profiler slows the service: compare these numbers only with other profiled runs)')
  }

  const results: Record<string, unknown> = {}
  const targets: Target[] = []
  for (const scenario of scenarios) {
    try {
      const report = await scenario.run(context)
      console.log(`\n${report.tables.join('\n\n')}`)
      results[scenario.name] = report.results
      targets.push(...report.targets)
    } catch (error) {
      // One broken scenario (e.g. the service crashed under it) must not cost the others' numbers.
      const message = error instanceof Error ? error.message : String(error)
      console.log(`\n## ${scenario.name}: FAILED: ${message}`)
      results[scenario.name] = { failed: message }
      targets.push({ name: `${scenario.name}: the scenario completes`, measured: 'failed', met: false })
      process.exitCode = 1
    }
  }
  const seconds = (Date.now() - startedAt) / 1000
  console.log(`\n${targetsTable('targets', targets)}`)
  console.log(`\nfinished in ${seconds.toFixed(0)} s; load average at the end ${loadavg().map((load) => load.toFixed(2)).join(' ')}`)
  await writeFile(join(REPO_ROOT, output.results), JSON.stringify({ machine, seconds, targets, results }, null, 2) + '\n')
}

try {
  await main()
} catch (error) {
  if (!(error instanceof UsageError)) throw error
  console.error(`${error.message}\nusage: npm run bench -- [--only <scenario>] [--profile] [--node <path to a node executable>]`)
  process.exitCode = 2
}
