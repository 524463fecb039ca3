/**
 * deploy/grafana and docker-compose.observability.yml, checked without Grafana (it is not installable here):
 * the dashboard JSON has what Grafana needs (uid, title, schema version, unique panel ids, a place on the grid,
 * a Prometheus data source, queries), shows what operators need, and reads only metrics the service exports or
 * the recording rules of deploy/prometheus make; the provisioning files point at the data source and the
 * dashboard folder the compose file mounts; and docker-compose accepts the compose file.
 *
 * Every query of the dashboard is also run against a real Prometheus scraping the service, in
 * prometheus-scrape.test.ts.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join, posix, relative } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { findCompose } from '../helpers/docker-engine.js'
import { call, withService } from '../helpers/service.js'
import {
  SCRAPE_SERIES, dashboardFiles, exportedMetricNames, grafanaDir, metricNamesIn, panelQueries, readDashboard, readYaml,
  recordingRules, renderVariables, repoRoot, scrapeTargets, serviceScrapeJob, variableQueryText, variableValues, yamlFiles,
  type Dashboard
} from './observability.js'

/** The width of Grafana's grid. */
const GRID_COLUMNS = 24

// Grafana's variable syntax in a plain string, not a template literal.
const DATASOURCE_VARIABLE = '${datasource}' // eslint-disable-line no-template-curly-in-string

interface ProvisionedDatasource {
  name: string
  uid: string
  type: string
  url: string
  isDefault?: boolean
  jsonData?: { timeInterval?: string }
}

interface DashboardProvider {
  name: string
  type: string
  folder?: string
  options: { path: string }
}

interface ComposeService {
  image?: string
  command?: string[]
  volumes?: string[]
  ports?: string[]
  environment?: Record<string, string>
  depends_on?: string[] | Record<string, unknown>
}

const datasources = yamlFiles(join(grafanaDir, 'provisioning', 'datasources'))
  .flatMap((path) => readYaml<{ datasources: ProvisionedDatasource[] }>(path).datasources)
const providers = yamlFiles(join(grafanaDir, 'provisioning', 'dashboards'))
  .flatMap((path) => readYaml<{ providers: DashboardProvider[] }>(path).providers)
const observability = readYaml<{ services: Record<string, ComposeService> }>(join(repoRoot, 'docker-compose.observability.yml'))
const dashboards = dashboardFiles().map((path) => ({ path, dashboard: readDashboard(path) }))

/** The datasource variable's default, or undefined when the dashboard has none. */
function datasourceVariableDefault (dashboard: Dashboard): string | undefined {
  const variable = dashboard.templating.list.find((candidate) => candidate.type === 'datasource')
  const value = variable?.current?.value
  return typeof value === 'string' ? value : undefined
}

/** Where a compose service mounts a folder of this repository: `./deploy/x:/etc/x:ro` → /etc/x. */
function mountTarget (service: ComposeService, hostPath: string): string | undefined {
  for (const volume of service.volumes ?? []) {
    const [source = '', target] = volume.split(':')
    if (posix.normalize(source) === posix.normalize(`./${hostPath}`)) return target
  }
  return undefined
}

t.test('the dashboards folder holds the dashboard', async (t) => {
  t.ok(dashboards.length >= 1, dashboards.map(({ path }) => relative(repoRoot, path)).join(', '))
})

for (const { path, dashboard } of dashboards) {
  const name = relative(repoRoot, path)

  t.test(`${name}: what Grafana needs to load it`, async (t) => {
    t.match(dashboard.uid, /^[A-Za-z0-9_-]{1,40}$/, 'a uid Grafana accepts (at most 40 characters)')
    t.ok(dashboard.title.trim().length > 0, 'a title')
    t.ok(Number.isInteger(dashboard.schemaVersion) && dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion}`)
    t.ok(dashboard.panels.length >= 9, `${dashboard.panels.length} panels`)
    const ids = dashboard.panels.map((panel) => panel.id)
    t.same(ids, [...new Set(ids)], 'panel ids are unique')

    const cells = new Map<string, number>()
    for (const panel of dashboard.panels) {
      const where = `panel ${panel.id} "${panel.title}"`
      const { h, w, x, y } = panel.gridPos
      t.ok([h, w, x, y].every(Number.isInteger) && h > 0 && w > 0 && x >= 0 && y >= 0 && x + w <= GRID_COLUMNS, `${where}: gridPos on the grid`)
      for (let row = y; row < y + h; row++) {
        for (let column = x; column < x + w; column++) {
          const other = cells.get(`${row},${column}`)
          if (other !== undefined) t.fail(`${where} overlaps panel ${other}`)
          cells.set(`${row},${column}`, panel.id)
        }
      }
      t.ok((panel.description ?? '').length > 40, `${where}: a description says what it shows`)
      t.equal(panel.datasource?.type, 'prometheus', `${where}: a Prometheus data source`)
      t.ok(panel.datasource?.uid === DATASOURCE_VARIABLE || datasources.some((source) => source.uid === panel.datasource?.uid),
        `${where}: its data source is the provisioned one or the datasource variable`)
      const targets = panel.targets ?? []
      t.ok(targets.length > 0, `${where}: queries`)
      t.same(targets.map((target) => target.refId), [...new Set(targets.map((target) => target.refId))], `${where}: unique refIds`)
      for (const target of targets) {
        t.ok(target.expr.trim().length > 0, `${where}, ${target.refId}: an expression`)
        if (target.datasource !== undefined) t.same(target.datasource, panel.datasource, `${where}, ${target.refId}: the panel's data source`)
      }
    }
  })

  t.test(`${name}: its data source variable defaults to the provisioned Prometheus`, async (t) => {
    const usesVariable = JSON.stringify(dashboard).includes(DATASOURCE_VARIABLE)
    const variable = dashboard.templating.list.find((candidate) => candidate.type === 'datasource')
    if (usesVariable) {
      t.equal(variable?.name, 'datasource', 'a variable named datasource')
      t.equal(variable?.query, 'prometheus', 'offering Prometheus data sources')
    }
    const provisioned = datasources.find((source) => source.uid === datasourceVariableDefault(dashboard))
    t.ok(provisioned, 'the default is the uid of a provisioned data source')
    t.equal(provisioned?.type, 'prometheus')
    for (const query of dashboard.templating.list.filter((candidate) => candidate.type === 'query')) {
      t.same(query.datasource, { type: 'prometheus', uid: DATASOURCE_VARIABLE }, `$${query.name} queries the same data source`)
      t.match(variableQueryText(query), /^label_values\(/, `$${query.name} lists label values`)
    }
  })

  t.test(`${name}: shows the service's request outcomes, latency beside the client timeout, hedging, attempts, overshoot, shedding and process health`, async (t) => {
    const queries = panelQueries(dashboard)
    const reads = (pattern: RegExp): boolean => queries.some((query) => pattern.test(query.expr))
    t.ok(reads(/sum by \(outcome\) \(job_endpoint_outcome:smart_requests:rate1m\{/), 'request rate by outcome')
    t.ok(reads(/smart_request_duration_seconds:p99/) && reads(/\$client_timeout/), 'latency percentiles and the client timeout')
    t.ok(reads(/smart_hedges/) && reads(/smart_hedge_wins/) && reads(/smart_hedges_throttled/), 'hedges, hedge wins, held-back hedges')
    t.ok(reads(/smart_upstream_attempts:rate1m/), 'attempt results')
    t.ok(reads(/smart_deadline_overshoot_seconds/), 'deadline overshoot')
    t.ok(reads(/smart_overload_shed_ratio/), 'shedding')
    t.ok(reads(/process_open_fds/) && reads(/process_max_fds/), 'open descriptors and their limit')
    t.ok(reads(/process_resident_memory_bytes/), 'RSS')
    t.ok(reads(/nodejs_eventloop_lag_p99_seconds/), 'event-loop delay')
    const latency = dashboard.panels.find((panel) => (panel.targets ?? []).some((target) => target.expr.includes('$client_timeout')))
    t.match(latency?.description, /client timeout/i, 'the latency panel explains the client timeout line')
  })

  t.test(`${name}: every metric it reads is exported by the service or recorded by a rule, and every metric of the service is shown`, async (t) => {
    const { service } = await withService(t, { script: () => ({ kind: 'json' }) })
    const exported = exportedMetricNames((await call(`${service.url}/metrics`)).text)
    const rules = recordingRules()
    const recorded = new Set(rules.map((rule) => rule.record))
    const values = variableValues(dashboard, { job: serviceScrapeJob().job_name })
    const read = new Set<string>()
    const variableQueries = dashboard.templating.list.filter((variable) => variable.type === 'query')
      .map((variable) => ({ where: `variable $${variable.name}`, expr: variableQueryText(variable).replace(/^label_values\((.*),\s*\w+\)$/, '$1') }))
    for (const { where, expr } of [...panelQueries(dashboard), ...variableQueries]) {
      const metrics = metricNamesIn(renderVariables(expr, values))
      for (const metric of metrics) {
        read.add(metric)
        t.ok(exported.has(metric) || recorded.has(metric) || SCRAPE_SERIES.has(metric), `${where}: ${metric} exists`)
      }
    }
    // What the recording rules it reads read in turn is shown too.
    for (const rule of rules.filter((candidate) => read.has(candidate.record))) for (const metric of metricNamesIn(rule.expr)) read.add(metric)
    const families = [...exported].filter((metric) => metric.startsWith('smart_')).map((metric) => metric.replace(/_(bucket|sum|count)$/, ''))
    for (const family of new Set(families)) {
      t.ok([...read].some((metric) => metric === family || metric.startsWith(`${family}_`)), `${family} is shown`)
    }
  })
}

t.test('renderVariables fills in every variable, and refuses one it has no value for', async (t) => {
  // eslint-disable-next-line no-template-curly-in-string -- Grafana's ${name} syntax, in a plain string on purpose
  t.equal(renderVariables('rate(x{a=~"$a", b="${b}", c="[[c]]"}[$__rate_interval])', { a: '.*', b: '1', c: '2', __rate_interval: '1m' }),
    'rate(x{a=~".*", b="1", c="2"}[1m])')
  t.throws(() => renderVariables('x{a="$unknown"}', {}), /\$unknown/)
})

t.test('the provisioned data source is the Prometheus of docker-compose.observability.yml', async (t) => {
  t.equal(datasources.length, 1, 'one data source')
  const [source] = datasources
  t.equal(source?.type, 'prometheus')
  t.equal(source?.isDefault, true, 'the default data source')
  const prometheus = observability.services.prometheus
  t.ok(prometheus, 'the compose file has a prometheus service')
  const listenPort = /--web\.listen-address=[^:]*:(\d+)/.exec((prometheus?.command ?? []).join(' '))?.[1]
  t.equal(source?.url, `http://prometheus:${listenPort ?? '?'}`, 'its URL is the prometheus service on its listen port')
  const scrapeInterval = readYaml<{ global: { scrape_interval: string } }>(join(repoRoot, 'deploy', 'prometheus', 'prometheus.yml')).global.scrape_interval
  t.equal(source?.jsonData?.timeInterval, scrapeInterval, 'its minimum interval is the scrape interval (for $__rate_interval)')
})

t.test('the dashboard provider loads the folder docker-compose.observability.yml mounts', async (t) => {
  const grafana = observability.services.grafana as ComposeService
  t.ok(grafana, 'the compose file has a grafana service')
  t.equal(mountTarget(grafana, 'deploy/grafana/provisioning'), '/etc/grafana/provisioning', 'the provisioning folder is where Grafana reads it')
  const dashboardsMount = mountTarget(grafana, 'deploy/grafana/dashboards')
  t.ok(dashboardsMount, 'deploy/grafana/dashboards is mounted')
  t.equal(providers.length, 1, 'one dashboard provider')
  t.equal(providers[0]?.type, 'file')
  t.equal(providers[0]?.options.path, dashboardsMount, 'it reads the mounted folder')
  const home = grafana.environment?.GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH ?? ''
  t.ok(home.startsWith(`${dashboardsMount ?? '?'}/`), 'the home dashboard is in that folder')
  t.ok(existsSync(join(repoRoot, 'deploy', 'grafana', 'dashboards', posix.basename(home))), `the home dashboard ${posix.basename(home)} exists`)
})

t.test('the compose file runs deploy/prometheus against the service of docker-compose.yml, with pinned images', async (t) => {
  const prometheus = observability.services.prometheus as ComposeService
  const configDir = mountTarget(prometheus, 'deploy/prometheus')
  t.ok(configDir, 'deploy/prometheus is mounted')
  t.ok((prometheus.command ?? []).includes(`--config.file=${configDir ?? '?'}/prometheus.yml`), 'Prometheus reads deploy/prometheus/prometheus.yml')
  const app = parseYaml(readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, ComposeService> }
  const targets = scrapeTargets(serviceScrapeJob())
  t.ok(targets.length > 0, 'prometheus.yml has targets')
  for (const target of targets) {
    const [host = '', port] = target.split(':')
    t.ok(app.services[host], `${target}: a service of docker-compose.yml`)
    t.equal(port, app.services[host]?.environment?.PORT, `${target}: the port it listens on`)
  }
  for (const [name, service] of Object.entries(observability.services)) {
    t.match(service.image, /^[\w./-]+:v?\d+\.\d+\.\d+$/, `${name}: the image is pinned to a release`)
    for (const port of service.ports ?? []) t.match(port, /^127\.0\.0\.1:/, `${name}: published on the host's loopback only`)
  }
})

const compose = findCompose()
const skipCompose = compose === undefined &&
  'neither docker-compose nor `docker compose` is installed (apt-get install docker-compose; .ci/run installs it)'

// Prometheus finds the replicas of docker-compose.replicas.yml by the same service name, so both files combine.
const combinations: Array<[string, string[]]> = [
  ['docker-compose.yml', ['api', 'grafana', 'prometheus', 'simulator']],
  ['docker-compose.replicas.yml', ['api', 'grafana', 'nginx', 'prometheus', 'simulator']]
]
for (const [appFile, services] of combinations) {
  t.test(`docker-compose config accepts ${appFile} with docker-compose.observability.yml`, { skip: skipCompose }, async (t) => {
    if (compose === undefined) return
    const result = spawnSync(compose[0] as string, [...compose.slice(1), '-f', appFile, '-f', 'docker-compose.observability.yml', 'config'], {
      cwd: repoRoot,
      encoding: 'utf8',
      timeout: 60_000
    })
    t.equal(result.status, 0, `${compose.join(' ')} config succeeds`, { stderr: result.stderr })
    const normalised = parseYaml(result.stdout) as { services: Record<string, ComposeService> }
    t.same(Object.keys(normalised.services).sort(), services)
  })
}
