/**
 * deploy/prometheus, checked with Prometheus's own tool: promtool accepts the configuration and the rule files,
 * and the rules' unit tests (deploy/prometheus/tests) pass. Around them, what promtool does not check: recording
 * rules named level:metric:operations and each one's value tested, every alert with a `for:`, a severity, a
 * summary, a description and a runbook, tested both firing and not firing, and every metric the rules read
 * exported by the service.
 *
 * promtool is required, not optional: .ci/run installs Debian's `prometheus` package, which brings it.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { findExecutable, run } from '../helpers/docker-engine.js'
import { call, withService } from '../helpers/service.js'
import {
  SCRAPE_SERIES, alertingRules, exportedMetricNames, metricNamesIn, prometheusDir, readPrometheusConfig, readRuleFiles,
  readYaml, recordingRules, repoRoot, serviceScrapeJob, yamlFiles
} from './observability.js'

interface PromtoolTestFile {
  rule_files: string[]
  tests: Array<{
    name?: string
    promql_expr_test?: Array<{ expr: string, exp_samples: unknown[] }>
    alert_rule_test?: Array<{ alertname: string, eval_time: string, exp_alerts?: unknown[] }>
  }>
}

const promtool = findExecutable('promtool')
const ruleFilePaths = yamlFiles(join(prometheusDir, 'rules'))
const testFilePaths = yamlFiles(join(prometheusDir, 'tests'))
const fromRepo = (path: string): string => relative(repoRoot, path)

async function runPromtool (args: string[]): Promise<{ code: number | null, output: string }> {
  const result = await run(promtool as string, args, { cwd: repoRoot, timeoutMs: 60_000 })
  return { code: result.code, output: `${result.stdout}${result.stderr}` }
}

t.test('promtool is installed (apt-get install prometheus; .ci/run installs it)', async (t) => {
  t.ok(promtool, 'promtool is on PATH')
})

t.test('promtool check config: the scrape configuration and the rule files it loads', { skip: promtool === undefined }, async (t) => {
  const { code, output } = await runPromtool(['check', 'config', 'deploy/prometheus/prometheus.yml'])
  t.equal(code, 0, 'promtool check config succeeds', { output })
  // The configuration's rule_files glob must find every rule file, or a file would be checked here but never loaded.
  for (const path of ruleFilePaths) t.match(output, `Checking ${fromRepo(path)}`, `prometheus.yml loads ${fromRepo(path)}`)
  t.match(output, `SUCCESS: ${ruleFilePaths.length} rule files found`, 'prometheus.yml loads every file of rules/')
})

t.test('promtool check rules', { skip: promtool === undefined }, async (t) => {
  t.ok(ruleFilePaths.length >= 2, 'recording rules and alerts')
  const { code, output } = await runPromtool(['check', 'rules', ...ruleFilePaths.map(fromRepo)])
  t.equal(code, 0, 'promtool check rules succeeds', { output })
})

t.test('promtool test rules: the unit tests of the recording rules and the alerts pass', { skip: promtool === undefined }, async (t) => {
  t.ok(testFilePaths.length >= 2, 'unit tests of the recording rules and of the alerts')
  const { code, output } = await runPromtool(['test', 'rules', ...testFilePaths.map(fromRepo)])
  t.equal(code, 0, 'promtool test rules succeeds', { output })
  t.notMatch(output, /FAILED/, 'no test failed')
})

t.test('the unit tests load every rule file and cover every rule', async (t) => {
  const testFiles = testFilePaths.map((path) => ({ path, ...readYaml<PromtoolTestFile>(path) }))
  const loaded = new Set(testFiles.flatMap((file) => file.rule_files.map((ruleFile) => join(prometheusDir, 'tests', ruleFile))))
  for (const path of ruleFilePaths) t.ok(loaded.has(path), `the unit tests load ${fromRepo(path)}`)

  const cases = testFiles.flatMap((file) => file.tests)
  const testedExprs = new Set(cases.flatMap((testCase) => (testCase.promql_expr_test ?? []).map((exprTest) => exprTest.expr.trim())))
  for (const rule of recordingRules()) {
    t.ok(testedExprs.has(rule.record), `recording rule ${rule.record}: its value is tested`)
  }
  const alertTests = cases.flatMap((testCase) => testCase.alert_rule_test ?? [])
  for (const rule of alertingRules()) {
    const mine = alertTests.filter((alertTest) => alertTest.alertname === rule.alert)
    t.ok(mine.some((alertTest) => (alertTest.exp_alerts ?? []).length > 0), `${rule.alert}: a case where it fires`)
    t.ok(mine.some((alertTest) => (alertTest.exp_alerts ?? []).length === 0), `${rule.alert}: a case where it does not`)
  }
})

t.test('recording rules are named level:metric:operations, once each', async (t) => {
  const names = recordingRules().map((rule) => rule.record)
  t.ok(names.length >= 10, `${names.length} recording rules`)
  t.same(names, [...new Set(names)], 'no name is recorded twice')
  for (const name of names) {
    const [level = '', metric = '', operations = ''] = name.split(':')
    t.match(name, /^[a-z]+(?:_[a-z]+)*:[a-z_]+:[a-z0-9_]+$/, `${name} has three parts`)
    // The level lists the labels the rule keeps: every one of them must be kept by its aggregation.
    const rule = recordingRules().find((candidate) => candidate.record === name)
    for (const label of level.split('_')) t.match(rule?.expr, new RegExp(`by \\([^)]*\\b${label}\\b`), `${name} keeps ${label}`)
    t.match(metric, /^smart_/, `${name} names one of the service's metrics`)
    t.match(operations, /^(?:rate|ratio_rate|p\d\d_rate)(?:1m|5m)$/, `${name}: rate, ratio or quantile over a window`)
  }
})

t.test('every alert has a duration, a severity, a summary, a description and a runbook line', async (t) => {
  const alerts = alertingRules()
  const names = alerts.map((rule) => rule.alert)
  t.ok(alerts.length >= 6, `${alerts.length} alerts`)
  t.same(names, [...new Set(names)], 'alert names are unique')
  for (const rule of alerts) {
    t.match(rule.for, /^\d+[smh]$/, `${rule.alert}: for`)
    t.ok(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity is critical or warning`)
    for (const annotation of ['summary', 'description', 'runbook']) {
      t.ok((rule.annotations?.[annotation] ?? '').trim().length > 20, `${rule.alert}: ${annotation}`)
    }
    t.notMatch(rule.annotations?.runbook ?? '', /\n/, `${rule.alert}: the runbook is one line`)
  }
  // Alerts on series every job has (up, process_*) must name the service's job, as prometheus.yml spells it.
  const jobName = serviceScrapeJob().job_name
  for (const rule of alerts) {
    for (const [, job] of rule.expr.matchAll(/\bjob="([^"]*)"/g)) t.equal(job, jobName, `${rule.alert} selects the scrape job`)
  }
  const generic = alerts.filter((rule) => metricNamesIn(rule.expr).some((name) => !name.includes(':') && !name.startsWith('smart_')))
  t.ok(generic.length >= 2, 'the instance-down and descriptor alerts read generic series')
  for (const rule of generic) t.match(rule.expr, `job="${jobName}"`, `${rule.alert} reads only the service's job`)
})

t.test('every metric the rules read is exported by the service (or recorded by a rule)', async (t) => {
  const { service } = await withService(t, { script: () => ({ kind: 'json' }) })
  const exported = exportedMetricNames((await call(`${service.url}/metrics`)).text)
  const recorded = new Set(recordingRules().map((rule) => rule.record))
  const files = readRuleFiles()
  t.ok(readPrometheusConfig().rule_files?.length, 'prometheus.yml loads rule files')
  for (const file of files) {
    for (const rule of file.groups.flatMap((group) => group.rules)) {
      const name = 'record' in rule ? rule.record : rule.alert
      const metrics = metricNamesIn(rule.expr)
      t.ok(metrics.length > 0, `${name} reads a metric`)
      for (const metric of metrics) {
        t.ok(exported.has(metric) || recorded.has(metric) || SCRAPE_SERIES.has(metric), `${name}: ${metric} exists`)
      }
    }
  }
})

t.test('the README lists every recording rule and every alert', async (t) => {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Monitoring'), readme.indexOf('\n### ', readme.indexOf('### Monitoring') + 1))
  t.ok(section.length > 1000, 'a Monitoring section under Operating')
  const lines = section.split('\n')
  for (const { record } of recordingRules()) {
    // A row may name several rules of one metric: `level:metric:p50_rate1m`, `p90_rate1m`.
    const prefix = record.slice(0, record.lastIndexOf(':') + 1)
    const operations = record.slice(prefix.length)
    t.ok(lines.some((line) => line.includes(`\`${record}\``) || (line.includes(`\`${prefix}`) && line.includes(`\`${operations}\``))), record)
  }
  for (const { alert } of alertingRules()) t.match(section, new RegExp(`^\\| \`${alert}\` \\|.*\\|.*\\|.*\\|$`, 'm'), `${alert}: a row with its runbook`)
})

t.test('metricNamesIn finds metric names, not functions, keywords, labels or durations', async (t) => {
  t.same(metricNamesIn('sum by (job, le) (rate(a_total{outcome!~"x|y"}[5m])) / on (job) group_left b:c:rate1m > bool 0.5'), ['a_total', 'b:c:rate1m'])
  t.same(metricNamesIn('histogram_quantile(0.99, sum(rate(x_bucket[1m])) by (le)) or vector(1e3) offset 5m'), ['x_bucket'])
  t.same(metricNamesIn('up == 0 unless absent(up)'), ['up'])
  t.throws(() => metricNamesIn('{__name__="up"}'), /__name__/)
})
