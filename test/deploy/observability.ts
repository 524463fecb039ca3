/**
 * What the tests of deploy/prometheus and deploy/grafana share: reading the Prometheus configuration, its rule
 * files and the Grafana dashboard; the metric names a PromQL expression reads; the metric names the service
 * exports; and a dashboard expression with Grafana's variables filled in, ready for Prometheus's API.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
export const prometheusDir = join(repoRoot, 'deploy', 'prometheus')
export const grafanaDir = join(repoRoot, 'deploy', 'grafana')

export function readYaml<T> (path: string): T {
  return parseYaml(readFileSync(path, 'utf8')) as T
}

/** The YAML files of a folder, by path. */
export function yamlFiles (dir: string): string[] {
  return readdirSync(dir).filter((name) => /\.ya?ml$/.test(name)).sort().map((name) => join(dir, name))
}

export interface ScrapeConfig {
  job_name: string
  metrics_path?: string
  static_configs?: Array<{ targets: string[], labels?: Record<string, string> }>
  dns_sd_configs?: Array<{ names: string[], type?: string, port?: number }>
  [setting: string]: unknown
}

export interface PrometheusConfig {
  global?: Record<string, unknown>
  rule_files?: string[]
  scrape_configs: ScrapeConfig[]
  [section: string]: unknown
}

export function readPrometheusConfig (): PrometheusConfig {
  return readYaml<PrometheusConfig>(join(prometheusDir, 'prometheus.yml'))
}

/** The one scrape job of deploy/prometheus/prometheus.yml: the service. */
export function serviceScrapeJob (config: PrometheusConfig = readPrometheusConfig()): ScrapeConfig {
  if (config.scrape_configs.length !== 1) {
    throw new Error(`deploy/prometheus/prometheus.yml should scrape one job (the service), found ${config.scrape_configs.length}`)
  }
  return config.scrape_configs[0] as ScrapeConfig
}

export interface RecordingRule {
  record: string
  expr: string
  labels?: Record<string, string>
}

export interface AlertingRule {
  alert: string
  expr: string
  for?: string
  labels?: Record<string, string>
  annotations?: Record<string, string>
}

export type Rule = RecordingRule | AlertingRule

export interface RuleFile {
  path: string
  groups: Array<{ name: string, interval?: string, rules: Rule[] }>
}

/** The job's targets as `host:port`: its static ones, and the names its DNS discovery looks up. */
export function scrapeTargets (job: ScrapeConfig): string[] {
  return [
    ...(job.static_configs ?? []).flatMap((config) => config.targets),
    ...(job.dns_sd_configs ?? []).flatMap((config) => config.names.map((name) => `${name}:${config.port ?? '?'}`))
  ]
}

export function readRuleFiles (): RuleFile[] {
  return yamlFiles(join(prometheusDir, 'rules')).map((path) => ({ path, ...readYaml<Omit<RuleFile, 'path'>>(path) }))
}

export function isRecordingRule (rule: Rule): rule is RecordingRule {
  return 'record' in rule
}

export function recordingRules (files: RuleFile[] = readRuleFiles()): RecordingRule[] {
  return files.flatMap((file) => file.groups.flatMap((group) => group.rules)).filter(isRecordingRule)
}

export function alertingRules (files: RuleFile[] = readRuleFiles()): AlertingRule[] {
  return files.flatMap((file) => file.groups.flatMap((group) => group.rules)).filter((rule): rule is AlertingRule => !isRecordingRule(rule))
}

/** PromQL's keywords: words that can stand where a metric name could, but are not one. */
const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring',
  'group_left', 'group_right', 'inf', 'nan', 'atan2'])

/**
 * The metric names an expression reads. Label lists of `by (…)`, `on (…)` and the like, label matchers `{…}`,
 * ranges `[…]`, strings and numbers are removed first; what is left that is not a function call or a keyword is
 * a metric name. A selector written `{__name__="…"}` is not supported: it throws rather than being missed.
 */
export function metricNamesIn (expr: string): string[] {
  if (expr.includes('__name__')) throw new Error(`unsupported selector by __name__ in: ${expr}`)
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
  const names = new Set<string>()
  for (const match of stripped.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?!\w)(\s*\()?/g)) {
    const [, word = '', call] = match
    if (call !== undefined || PROMQL_KEYWORDS.has(word.toLowerCase())) continue
    names.add(word)
  }
  return [...names]
}

/**
 * The sample names of every metric family in Prometheus text, from its `# TYPE` lines: a family with no sample
 * yet (a labelled counter nothing has counted) is listed too. A histogram's samples are `_bucket`, `_sum` and
 * `_count`.
 */
export function exportedMetricNames (metricsText: string): Set<string> {
  const names = new Set<string>()
  for (const [, family = '', type] of metricsText.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(family + suffix)
    else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) names.add(family + suffix)
    else names.add(family)
  }
  return names
}

/** Series that Prometheus itself adds to every scrape. */
export const SCRAPE_SERIES = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_series_added'])

export interface DashboardTarget {
  refId: string
  expr: string
  datasource?: { type?: string, uid?: string }
  legendFormat?: string
}

export interface DashboardPanel {
  id: number
  type: string
  title: string
  description?: string
  datasource?: { type?: string, uid?: string }
  gridPos: { h: number, w: number, x: number, y: number }
  targets?: DashboardTarget[]
}

export interface DashboardVariable {
  name: string
  type: string
  query?: string | { query: string }
  datasource?: { type?: string, uid?: string }
  includeAll?: boolean
  allValue?: string
  current?: { value?: string | string[] }
}

export interface Dashboard {
  uid: string
  title: string
  schemaVersion: number
  panels: DashboardPanel[]
  templating: { list: DashboardVariable[] }
}

export const dashboardsDir = join(grafanaDir, 'dashboards')

/** The dashboard JSON files of deploy/grafana/dashboards, by path. */
export function dashboardFiles (): string[] {
  return readdirSync(dashboardsDir).filter((name) => name.endsWith('.json')).sort().map((name) => join(dashboardsDir, name))
}

export function readDashboard (path: string): Dashboard {
  return JSON.parse(readFileSync(path, 'utf8')) as Dashboard
}

/** A query of the dashboard, by where it is shown. */
export interface DashboardQuery {
  where: string
  expr: string
}

export function panelQueries (dashboard: Dashboard): DashboardQuery[] {
  return dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({
    where: `panel ${panel.id} "${panel.title}", query ${target.refId}`,
    expr: target.expr
  })))
}

export function variableQueryText (variable: DashboardVariable): string {
  return typeof variable.query === 'string' ? variable.query : variable.query?.query ?? ''
}

/**
 * Grafana's variables with the values the tests give them: `$__rate_interval` as Grafana computes it for a 15 s
 * scrape interval (four scrapes), a variable that can be "All" as its allValue, a custom one as its current value,
 * and the others as `given` says. A variable with no such value throws, and so does any `$` left over: a new
 * variable in the dashboard must get a value here, on purpose.
 */
export function variableValues (dashboard: Dashboard, given: Record<string, string>): Record<string, string> {
  const values: Record<string, string> = { __rate_interval: '1m', __interval: '15s', __range: '1h' }
  for (const variable of dashboard.templating.list) {
    if (variable.type === 'datasource') continue
    const current = variable.current?.value
    const value = given[variable.name] ??
      (variable.includeAll === true ? variable.allValue : undefined) ??
      (variable.type === 'custom' && typeof current === 'string' ? current : undefined)
    if (value === undefined) throw new Error(`no value for the dashboard variable $${variable.name}`)
    values[variable.name] = value
  }
  return values
}

/** `expr` with Grafana's `$name`, `${name}` and `[[name]]` replaced by `values`. */
export function renderVariables (expr: string, values: Record<string, string>): string {
  const rendered = expr.replace(/\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]/g, (whole, braced?: string, bare?: string, bracketed?: string) => {
    const name = braced ?? bare ?? bracketed ?? ''
    const value = values[name]
    if (value === undefined) throw new Error(`no value for ${whole} in: ${expr}`)
    return value
  })
  if (rendered.includes('$')) throw new Error(`a variable left in: ${expr}`)
  return rendered
}
