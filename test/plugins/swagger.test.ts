import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { Ajv } from 'ajv'
import { call, withService, type RunningService } from '../helpers/service.js'

type Json = Record<string, unknown>

/** The fields an OpenAPI 3.0 Schema Object may have; anything else must be an `x-` extension. */
const SCHEMA_OBJECT_FIELDS = new Set([
  'title', 'multipleOf', 'maximum', 'exclusiveMaximum', 'minimum', 'exclusiveMinimum', 'maxLength', 'minLength',
  'pattern', 'maxItems', 'minItems', 'uniqueItems', 'maxProperties', 'minProperties', 'required', 'enum', 'type',
  'allOf', 'oneOf', 'anyOf', 'not', 'items', 'properties', 'additionalProperties', 'description', 'format',
  'default', 'nullable', 'discriminator', 'readOnly', 'writeOnly', 'xml', 'externalDocs', 'example', 'deprecated',
  '$ref'
])

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']

const ERROR_STATUSES: Array<[string, string]> = [
  ['400', 'Bad Request'],
  ['408', 'Request Timeout'],
  ['502', 'Bad Gateway'],
  ['503', 'Service Unavailable']
]

const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }

function object (value: unknown): Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Json : {}
}

/** Every keyword that is neither an OpenAPI 3.0 Schema Object field nor an extension, with its path. */
function unknownKeywords (schema: unknown, path: string): string[] {
  const found: string[] = []
  for (const [key, value] of Object.entries(object(schema))) {
    if (!SCHEMA_OBJECT_FIELDS.has(key) && !key.startsWith('x-')) found.push(`${path}/${key}`)
    if (key === 'properties') {
      for (const [name, nested] of Object.entries(object(value))) found.push(...unknownKeywords(nested, `${path}/properties/${name}`))
    } else if (['allOf', 'oneOf', 'anyOf'].includes(key) && Array.isArray(value)) {
      value.forEach((nested, i) => found.push(...unknownKeywords(nested, `${path}/${key}/${i}`)))
    } else if (['items', 'not', 'additionalProperties'].includes(key)) {
      found.push(...unknownKeywords(value, `${path}/${key}`))
    }
  }
  return found
}

async function setup (t: Test): Promise<{ service: RunningService, document: Json }> {
  const { service } = await withService(t, { script: () => ({ kind: 'raw', body: '{"time": 42}' }) })
  const answer = await call(`${service.url}/docs/json`)
  t.equal(answer.status, 200, '/docs/json answers 200')
  t.match(answer.headers['content-type'], /^application\/json/)
  t.ok(answer.json, '/docs/json is JSON')
  return { service, document: answer.json ?? {} }
}

t.test('/docs/json is an OpenAPI 3 document of the service', async (t) => {
  const { document } = await setup(t)
  t.match(document.openapi, /^3\.\d+\.\d+$/, 'OpenAPI 3')
  t.match(document.info, { title: 'smart-api-requester', version, description: /time budget/ })

  const paths = object(document.paths)
  t.ok(Object.keys(paths).length > 0, 'has paths')
  const problems: string[] = []
  for (const [url, item] of Object.entries(paths)) {
    if (!url.startsWith('/')) problems.push(`${url}: does not start with /`)
    for (const [method, operation] of Object.entries(object(item))) {
      if (!HTTP_METHODS.includes(method)) problems.push(`${url}: ${method} is not an HTTP method`)
      const responses = object(object(operation).responses)
      if (Object.keys(responses).length === 0) problems.push(`${method} ${url}: no responses`)
      for (const [status, response] of Object.entries(responses)) {
        if (typeof object(response).description !== 'string') problems.push(`${method} ${url} ${status}: no description`)
        for (const [type, media] of Object.entries(object(object(response).content))) {
          problems.push(...unknownKeywords(object(media).schema, `${method} ${url} ${status} ${type}`))
        }
      }
      for (const parameter of (object(operation).parameters ?? []) as Json[]) {
        if (typeof parameter.name !== 'string' || !['query', 'header', 'path', 'cookie'].includes(String(parameter.in))) {
          problems.push(`${method} ${url}: invalid parameter ${JSON.stringify(parameter)}`)
        }
        problems.push(...unknownKeywords(parameter.schema, `${method} ${url} ${String(parameter.name)}`))
      }
    }
  }
  for (const [name, schema] of Object.entries(object(object(document.components).schemas))) {
    problems.push(...unknownKeywords(schema, `components/schemas/${name}`))
  }
  t.same(problems, [], 'paths, operations, responses and schemas are well formed')
})

t.test('GET /api/smart is documented with its timeout parameter, the x-timeout-ms header and every answer', async (t) => {
  const { document } = await setup(t)
  const paths = object(document.paths)
  t.same(Object.keys(object(paths['/api/smart'])), ['get'],
    'at its own URL, GET only: the routes that answer 405 to other methods are not operations')
  t.notOk(Object.keys(paths).some((url) => url.startsWith('/docs')), 'the documentation routes are not documented')
  t.ok(paths['/health'], '/health is documented')
  const operation = object(object(paths['/api/smart']).get)

  const parameters = (operation.parameters ?? []) as Json[]
  t.equal(parameters.length, 2, 'two parameters')
  const [timeout = {}, header = {}] = parameters
  t.match(timeout, { name: 'timeout', in: 'query', required: false, description: /milliseconds/, example: '1000' })
  t.match(timeout.schema, { type: 'string', pattern: String, 'x-decimal-maximum': 60000 },
    'the Ajv-only keyword is kept as an extension')
  t.match(header, { name: 'x-timeout-ms', in: 'header', required: false, description: /deadline/, example: '1000' })
  t.same(header.schema, timeout.schema, 'the header follows the rules of timeout')
  const ajv = new Ajv({ strict: false })
  t.ok(ajv.validate(object(timeout.schema), timeout.example), 'the example is a valid timeout')

  const responses = object(operation.responses)
  t.same(Object.keys(responses).sort(), ['200', '400', '408', '502', '503'])

  const success = object(object(object(responses['200']).content)['application/json'])
  t.match(object(responses['200']).description, /succeeded/)
  t.match(success.schema, {
    type: 'object',
    required: ['success', 'response'],
    properties: { success: { type: 'boolean', enum: [true] }, response: { description: String } }
  })
  t.same(success.example, { success: true, response: { time: 324 } }, '200 example')
  t.ok(ajv.validate(object(success.schema), success.example), 'the 200 example matches its schema')

  for (const [status, error] of ERROR_STATUSES) {
    const response = object(responses[status])
    t.ok(typeof response.description === 'string' && response.description.length > 10, `${status} description`)
    const media = object(object(response.content)['application/json'])
    t.match(media.schema, {
      type: 'object',
      required: ['success', 'statusCode', 'error', 'message'],
      properties: {
        success: { type: 'boolean', enum: [false] },
        statusCode: { type: 'number', enum: [Number(status)] },
        error: { type: 'string', enum: [error] },
        message: { type: 'string' }
      }
    }, `${status} schema`)
    t.match(media.example, { success: false, statusCode: Number(status), error, message: String }, `${status} example`)
    t.ok(ajv.validate(object(media.schema), media.example), `the ${status} example matches its schema`)
  }
})

t.test('the fan-out endpoints are documented with their answers, each with an example', async (t) => {
  const { document } = await setup(t)
  const paths = object(document.paths)
  const expected: Record<string, string[]> = {
    '/api/first': ['200', '400', '408', '502', '503'],
    '/api/all': ['200', '400', '408', '502', '503'],
    '/api/within-timeout': ['200', '400', '503']
  }
  const ajv = new Ajv({ strict: false })
  for (const [url, statuses] of Object.entries(expected)) {
    t.same(Object.keys(object(paths[url])), ['get'], `${url}: GET only`)
    const operation = object(object(paths[url]).get)
    t.match(operation.parameters, [{ name: 'timeout', in: 'query' }], `${url}: the timeout parameter`)
    const responses = object(operation.responses)
    t.same(Object.keys(responses).sort(), statuses, `${url}: every answer`)
    for (const status of statuses) {
      const media = object(object(object(responses[status]).content)['application/json'])
      t.ok(media.example !== undefined && ajv.validate(object(media.schema), media.example), `${url} ${status}: an example that matches its schema`)
    }
  }
  const list = object(object(object(object(object(paths['/api/all']).get).responses)['200']).content)['application/json']
  t.match(object(list).example, { success: true, response: [{ time: Number }, { time: Number }] }, 'a list of upstream answers')
})

t.test('operations are grouped: the API apart from the operational routes', async (t) => {
  const { document } = await setup(t)
  t.match(document.tags, [{ name: 'API', description: String }, { name: 'Operations', description: String }])
  const tagsOf = Object.fromEntries(Object.entries(object(document.paths))
    .map(([url, item]) => [url, object(object(item).get).tags]))
  t.same(tagsOf, {
    '/api/smart': ['API'],
    '/api/first': ['API'],
    '/api/all': ['API'],
    '/api/within-timeout': ['API'],
    '/health': ['Operations'],
    '/ready': ['Operations'],
    '/metrics': ['Operations']
  })
})

t.test('the document follows the configuration', async (t) => {
  const { service } = await withService(t, { script: () => ({ kind: 'json' }), env: { MAX_TIMEOUT_MS: '5000' } })
  const { json } = await call(`${service.url}/docs/json`)
  const timeout = ((object(object(object(json?.paths)['/api/smart']).get).parameters ?? []) as Json[])[0]
  t.match(timeout, { description: /1 to 5000/, schema: { 'x-decimal-maximum': 5000 } })
})

t.test('/docs serves Swagger UI, /docs/yaml the same document', async (t) => {
  const { service } = await setup(t)
  const page = await call(`${service.url}/docs`)
  t.equal(page.status, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.text, /<div id="swagger-ui">/)
  t.match(page.text, /swagger-ui-bundle\.js/)
  const initializer = await call(`${service.url}/docs/static/swagger-initializer.js`)
  t.equal(initializer.status, 200)
  t.match(initializer.text, /resolveUrl\('\.\/json'\)/, 'the UI loads ./json')
  const bundle = await call(`${service.url}/docs/static/swagger-ui-bundle.js`)
  t.equal(bundle.status, 200, 'the UI assets are served')
  const yaml = await call(`${service.url}/docs/yaml`)
  t.equal(yaml.status, 200)
  t.match(yaml.text, /^openapi: 3\./)
  t.match(yaml.text, /\/api\/smart:/)
})

t.test('the documentation leaves the service as it was', async (t) => {
  const { service } = await setup(t)
  const success = await call(`${service.url}/api/smart?timeout=1000`)
  t.equal(success.status, 200)
  t.equal(success.text, '{"success":true,"response":{"time": 42}}', 'the upstream JSON is still passed byte for byte')
  const invalid = await call(`${service.url}/api/smart?timeout=1.5`)
  t.equal(invalid.status, 400)
  t.same(invalid.json, { success: false, statusCode: 400, error: 'Bad Request', message: 'Timeout has to be integer value.' })
  const again = await call(`${service.url}/docs/json`)
  t.equal(again.status, 200)
  t.ok(again.json, 'the document is still valid JSON after /api/smart answered')
  const missing = await call(`${service.url}/docs/static/nope.js`)
  t.equal(missing.status, 404)
  t.match(missing.json, { success: false, statusCode: 404 }, 'unknown documentation files answer the JSON 404')
})
