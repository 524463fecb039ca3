/**
 * deploy/kubernetes, checked offline, without a cluster:
 *
 * 1. `kubectl kustomize` renders it, and every object it renders is valid against the Kubernetes API schemas
 *    (kubernetes-models). A kind this file has no schema for fails rather than going unchecked.
 * 2. What the manifests say about the service is true of it: the config map passes every setting through, the
 *    pods get no variable that is not a setting, the probe and scrape paths are routes that answer 200, every
 *    port is the PORT the service listens on, the kubelet waits longer than the drain and the grace period, the
 *    user is the image's, and the selectors and references of the Service, autoscaler and disruption budget find
 *    the Deployment's pods.
 *
 * The schemas accept fields they do not know, so a misspelt field would pass step 1: every field the pods rely on
 * is therefore also checked by name here.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap'
import type { IContainer } from 'kubernetes-models/v1/Container'
import { Service, type IService } from 'kubernetes-models/v1/Service'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import { HorizontalPodAutoscaler, type IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { ConfigSchema, loadConfig } from '../../lib/config.js'
import { call, withService, type ClientAnswer } from '../helpers/service.js'

const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
const KUSTOMIZATION = join(repoRoot, 'deploy', 'kubernetes')
const SETTINGS = Object.keys(ConfigSchema.properties)

interface RenderedObject {
  apiVersion: string
  kind: string
  metadata: { name: string }
}

interface KubernetesModel {
  validate (): void
}

/**
 * The schema of each kind the kustomization may render, by `apiVersion/kind`. The parsed YAML is exactly what
 * validate() is there to judge, so the constructors are handed it untyped.
 */
const MODELS: Record<string, new (data: never) => KubernetesModel> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget
}

async function renderKustomization (): Promise<RenderedObject[]> {
  let output: string
  try {
    ({ stdout: output } = await promisify(execFile)('kubectl', ['kustomize', KUSTOMIZATION], { timeout: 60_000 }))
  } catch (error) {
    throw new Error(`kubectl kustomize ${KUSTOMIZATION} failed (Debian: apt-get install kubernetes-client): ${(error as Error).message}`)
  }
  return parseAllDocuments(output).map((document) => {
    if (document.errors.length > 0) throw new Error(`kubectl kustomize printed invalid YAML: ${document.errors.join('; ')}`)
    const object = document.toJSON() as Partial<RenderedObject> | null
    if (typeof object?.apiVersion !== 'string' || typeof object.kind !== 'string' || typeof object.metadata?.name !== 'string') {
      throw new Error(`a rendered document is not a Kubernetes object: ${JSON.stringify(object)}`)
    }
    return object as RenderedObject
  })
}

const rendered = await renderKustomization()

/** The one rendered object of that kind, typed as its schema describes it (step 1 checks that it is). */
function only<T> (kind: string): T {
  const matches = rendered.filter((object) => object.kind === kind)
  if (matches.length !== 1) throw new Error(`expected one ${kind}, the kustomization renders ${matches.length}`)
  return matches[0] as T
}

const deployment = only<IDeployment>('Deployment')
const configMap = only<IConfigMap>('ConfigMap')
const service = only<IService>('Service')
const autoscaler = only<IHorizontalPodAutoscaler>('HorizontalPodAutoscaler')
const disruptionBudget = only<IPodDisruptionBudget>('PodDisruptionBudget')

const podTemplate = deployment.spec?.template
const podSpec = podTemplate?.spec
const podLabels: Record<string, string> = podTemplate?.metadata?.labels ?? {}
if (podSpec?.containers.length !== 1) throw new Error('expected a Deployment with one container')
const container = podSpec.containers[0] as IContainer

/**
 * The variables the container gets from its manifest, as the kubelet assembles them: each envFrom config map (with
 * its prefix), then env. Anything whose value cannot be read here (another source, valueFrom) is refused, since it
 * could not be checked.
 */
function containerEnvironment (): Record<string, string> {
  const environment: Record<string, string> = {}
  for (const source of container.envFrom ?? []) {
    const mapName = source.configMapRef?.name
    const sourceMap = rendered.find((object) => object.kind === 'ConfigMap' && object.metadata.name === mapName) as IConfigMap | undefined
    if (sourceMap === undefined) throw new Error(`envFrom ${JSON.stringify(source)} is not a config map of the kustomization`)
    for (const [name, value] of Object.entries(sourceMap.data ?? {})) environment[`${source.prefix ?? ''}${name}`] = value
  }
  for (const variable of container.env ?? []) {
    if (variable.value === undefined) throw new Error(`env ${variable.name} has no plain value`)
    environment[variable.name] = variable.value
  }
  return environment
}

const environment = containerEnvironment()
/** The service's settings in a pod: those the manifest gives, the defaults of lib/config.ts for the rest. */
const podConfig = loadConfig(environment)

/** A container port, by number or by name, as a probe or a Service's targetPort gives it. */
function containerPortNumber (port: string | number | undefined): number | undefined {
  if (typeof port === 'number') return port
  return container.ports?.find((candidate) => candidate.name === port)?.containerPort
}

/** Whether a selector picks the pods: matchLabels only (what these manifests use), and never an empty selector. */
function selectsPods (selector: { matchLabels?: Record<string, string>, matchExpressions?: unknown[] } | undefined): boolean {
  const matchLabels = Object.entries(selector?.matchLabels ?? {})
  if (selector?.matchExpressions !== undefined || matchLabels.length === 0) return false
  return matchLabels.every(([key, value]) => podLabels[key] === value)
}

const QUANTITY_SUFFIXES: Record<string, number> = {
  m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40
}

/** A resource quantity (`500m`, `2`, `256Mi`, `1G`) in plain units: cores or bytes. */
function quantity (value: string | number | undefined): number {
  const match = /^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(value))
  if (match === null) throw new Error(`not a resource quantity: ${value}`)
  return Number(match[1]) * (match[2] === undefined ? 1 : QUANTITY_SUFFIXES[match[2]] as number)
}

/** The numeric user id the image runs as: its final USER, a number or a user the base image creates. */
function imageUserId (): number {
  const dockerfile = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8').split('\n').filter((line) => !/^\s*#/.test(line))
  const finalStage = dockerfile.slice(dockerfile.findLastIndex((line) => /^FROM\s/.test(line)))
  const user = finalStage.findLast((line) => /^USER\s/.test(line))?.split(/\s+/)[1]?.split(':')[0]
  if (user === undefined) throw new Error('the Dockerfile\'s final stage has no USER')
  if (/^[0-9]+$/.test(user)) return Number(user)
  // The base is an official Node.js image, which creates `node` as uid 1000. The stand-in for it that the compose
  // tests build (no image registry may be reachable) creates the same user with the same command; the number is
  // read from there.
  const standIn = readFileSync(join(repoRoot, 'test', 'docker', 'stand-in-images.sh'), 'utf8')
  const useradd = new RegExp(`useradd --uid ([0-9]+) .*\\s${user}$`, 'm').exec(standIn)
  if (useradd === null) throw new Error(`no uid known for the image's user ${user}`)
  return Number(useradd[1])
}

t.test('every rendered object is valid against the Kubernetes schemas', async (t) => {
  t.same(rendered.map((object) => object.kind).sort(),
    ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service'], 'the objects of the issue, once each')
  for (const object of rendered) {
    const label = `${object.apiVersion} ${object.kind} ${object.metadata.name}`
    const Model = MODELS[`${object.apiVersion}/${object.kind}`]
    if (Model === undefined) {
      t.fail(`${label}: no schema for this kind here; add it to MODELS`)
      continue
    }
    t.doesNotThrow(() => new Model(object as never).validate(), label)
  }
})

t.test('the config map passes every setting of the service through, with its default but where a pod needs another', async (t) => {
  const settings = configMap.data ?? {}
  t.same(Object.keys(settings).sort(), [...SETTINGS].sort(), 'exactly the settings of lib/config.ts')
  t.doesNotThrow(() => loadConfig(settings), 'the service accepts every value')
  t.equal(settings.HOST, '0.0.0.0', 'HOST: every interface, or neither the probes nor the Service reach the pod')
  t.not(settings.UPSTREAM_URL, '', 'UPSTREAM_URL is set: empty, every pod would call the built-in simulator')
  const podNeeds = { HOST: '0.0.0.0', UPSTREAM_URL: settings.UPSTREAM_URL }
  t.same(loadConfig(settings), loadConfig(podNeeds), 'every other setting has the service\'s default')
})

t.test('the pods get their settings from the config map, and no variable that is not a setting', async (t) => {
  t.ok((container.envFrom ?? []).some((source) => source.configMapRef?.name === configMap.metadata?.name),
    'the container takes its environment from the config map')
  t.same(Object.keys(environment).filter((name) => !SETTINGS.includes(name)), [], 'every env and envFrom name is a setting')
  t.equal(podSpec.enableServiceLinks, false, 'no <SERVICE>_PORT variables from the Services of the namespace')
  t.equal(podConfig.HOST, '0.0.0.0', 'the service listens on the pod\'s address')
})

t.test('the probes and the Prometheus scrape are on routes of the service that answer 200', async (t) => {
  const readiness = container.readinessProbe?.httpGet
  const liveness = container.livenessProbe?.httpGet
  const annotations = podTemplate?.metadata?.annotations ?? {}
  t.equal(readiness?.path, '/ready', 'the readiness probe asks /ready')
  t.equal(liveness?.path, '/health', 'the liveness probe asks /health')
  t.equal(annotations['prometheus.io/scrape'], 'true', 'Prometheus scrapes the pods')
  t.equal(annotations['prometheus.io/path'], '/metrics', 'on /metrics')
  for (const probe of [readiness, liveness]) t.not(probe?.scheme, 'HTTPS', 'the service speaks plain HTTP')

  // The service as the pods run it, but for its address: its own loopback port, and no drain to wait for at the end.
  const { service: running } = await withService(t, { env: { ...environment, SHUTDOWN_DRAIN_MS: '0' } })
  const paths = { readiness: readiness?.path, liveness: liveness?.path, metrics: annotations['prometheus.io/path'] }
  const answers: Record<string, ClientAnswer> = {}
  for (const [what, path] of Object.entries(paths)) {
    answers[what] = await call(`${running.url}${path ?? ''}`)
    t.equal(answers[what].status, 200, `${what}: GET ${path} answers 200`)
  }
  const metrics = answers.metrics as ClientAnswer
  t.match(metrics.headers['content-type'], /^text\/plain/, 'in the Prometheus text format')
  t.match(metrics.text, /^# HELP smart_requests_total /m, 'with the service\'s own metrics')
})

t.test('every port is the one the service listens on', async (t) => {
  const port = podConfig.PORT
  t.same(container.ports?.map((candidate) => candidate.containerPort), [port], 'the containerPort is PORT')
  t.equal(containerPortNumber(container.readinessProbe?.httpGet?.port), port, 'the readiness probe asks PORT')
  t.equal(containerPortNumber(container.livenessProbe?.httpGet?.port), port, 'the liveness probe asks PORT')
  const servicePorts = service.spec?.ports ?? []
  t.ok(servicePorts.length > 0, 'the Service has a port')
  for (const servicePort of servicePorts) {
    t.equal(containerPortNumber(servicePort.targetPort ?? servicePort.port), port, `the Service's port ${servicePort.port} sends to PORT`)
  }
  t.equal(podTemplate?.metadata?.annotations?.['prometheus.io/port'], String(port), 'Prometheus scrapes PORT')
})

t.test('the kubelet waits out the drain and the grace period before it kills a pod', async (t) => {
  const shutdownSeconds = (podConfig.SHUTDOWN_DRAIN_MS + podConfig.SHUTDOWN_GRACE_MS) / 1000
  // 30 s is Kubernetes' default.
  t.ok((podSpec.terminationGracePeriodSeconds ?? 30) > shutdownSeconds,
    `terminationGracePeriodSeconds ${podSpec.terminationGracePeriodSeconds} > SHUTDOWN_DRAIN_MS + SHUTDOWN_GRACE_MS (${shutdownSeconds} s)`)
})

t.test('the container runs as the image\'s non-root user, with nothing it does not need', async (t) => {
  const pod = podSpec.securityContext ?? {}
  const own = container.securityContext ?? {}
  // A container's own securityContext wins over the pod's, field by field.
  t.equal(own.runAsNonRoot ?? pod.runAsNonRoot, true, 'runAsNonRoot')
  t.equal(own.runAsUser ?? pod.runAsUser, imageUserId(), 'runAsUser is the uid of the Dockerfile\'s USER')
  t.same(own.seccompProfile ?? pod.seccompProfile, { type: 'RuntimeDefault' }, 'the runtime\'s default seccomp profile')
  t.equal(own.readOnlyRootFilesystem, true, 'a read-only root file system')
  t.equal(own.allowPrivilegeEscalation, false, 'no privilege escalation')
  t.same(own.capabilities?.drop, ['ALL'], 'every capability dropped')
  t.same(own.capabilities?.add ?? [], [], 'and none added')
  t.equal(podSpec.automountServiceAccountToken, false, 'no Kubernetes API token')
})

t.test('the container asks for resources, and is limited', async (t) => {
  const { requests = {}, limits = {} } = container.resources ?? {}
  for (const resource of ['cpu', 'memory']) {
    t.ok(requests[resource] !== undefined && limits[resource] !== undefined, `${resource}: requests and limits`)
    t.ok(quantity(requests[resource]) <= quantity(limits[resource]),
      `${resource}: the request ${requests[resource]} is within the limit ${limits[resource]}`)
  }
})

t.test('the image is the one docker-compose.yml builds', async (t) => {
  const composeFile = readFileSync(join(repoRoot, 'docker-compose.yml'), 'utf8')
  const compose = parseYaml(composeFile, { merge: true }) as { services: { api: { image?: string } } }
  t.equal(container.image, compose.services.api.image, `the image of docker-compose.yml's api service: ${compose.services.api.image}`)
})

t.test('the Service, the autoscaler and the disruption budget find the Deployment\'s pods', async (t) => {
  t.ok(selectsPods(deployment.spec?.selector), 'the Deployment\'s selector picks its own pods')
  t.ok(selectsPods({ matchLabels: service.spec?.selector }), 'the Service sends to the pods')
  t.ok(selectsPods(disruptionBudget.spec?.selector), 'the disruption budget counts the pods')
  for (const constraint of podSpec.topologySpreadConstraints ?? []) {
    t.ok(selectsPods(constraint.labelSelector), `the spread over ${constraint.topologyKey} counts the pods`)
  }
  const deploymentRef = { apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata?.name }
  t.same(autoscaler.spec?.scaleTargetRef, deploymentRef, 'the autoscaler scales the Deployment')
  for (const metric of autoscaler.spec?.metrics ?? []) {
    if (metric.resource?.target.type !== 'Utilization') continue
    t.ok(container.resources?.requests?.[metric.resource.name] !== undefined,
      `the autoscaler's ${metric.resource.name} utilisation is of a request the container makes`)
  }
})

t.test('rollouts and evictions keep pods serving', async (t) => {
  const minReplicas = autoscaler.spec?.minReplicas ?? 1
  t.ok(minReplicas >= 2, `at least two replicas (${minReplicas})`)
  t.equal(deployment.spec?.replicas, undefined, 'the autoscaler alone sets the count')
  t.equal(deployment.spec?.strategy?.rollingUpdate?.maxUnavailable, 0, 'a rollout starts a new pod before it stops an old one')
  t.equal(disruptionBudget.spec?.maxUnavailable, 1, 'evictions take one pod at a time, whatever the count')
})
