import fp from 'fastify-plugin'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { FastifySchema } from 'fastify'
import packageJson from '../package.json' with { type: 'json' }

const DESCRIPTION = [
  "Calls a slow, flaky upstream \"work\" API on the client's behalf and answers within the time budget the client",
  'gives in `timeout` (milliseconds), in one of four ways:',
  '',
  '- `/api/smart`: one upstream request at once; if it has not succeeded after the hedge delay (300 ms by default),',
  '  more are sent together (2 by default). The first success wins and the others are aborted.',
  '- `/api/first`: three requests at once; the first success wins.',
  '- `/api/all`: three requests at once; every success, once all of them have ended.',
  '- `/api/within-timeout`: three requests at once; the successes that arrived before the timeout.',
  '',
  'When the timeout passes with no answer the status is 408; when every attempt failed, 502. Every error body is JSON',
  'with `success: false`, `statusCode`, `error` and `message`.'
].join('\n')

/**
 * Keywords of the route schemas that only this service's Ajv knows (see lib/decimal-maximum.ts). An
 * OpenAPI 3.0 Schema Object allows no unknown keywords, only `x-` extensions, so they are renamed.
 */
const CUSTOM_KEYWORDS: Record<string, string> = { decimalMaximum: 'x-decimal-maximum' }

/** A copy of a route schema with those keywords renamed; the route's own schema is left as it is. */
function withVendorKeywords (value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withVendorKeywords)
  if (typeof value !== 'object' || value === null) return value
  return Object.fromEntries(Object.entries(value).map(([key, nested]) =>
    [CUSTOM_KEYWORDS[key] ?? key, withVendorKeywords(nested)]))
}

/**
 * The OpenAPI 3 document, generated from the routes' TypeBox schemas, at /docs/json (and /docs/yaml),
 * and Swagger UI at /docs. It must be registered before the routes: it collects them as they are added.
 */
export default fp(async (fastify) => {
  await fastify.register(swagger, {
    openapi: {
      info: { title: 'smart-api-requester', description: DESCRIPTION, version: packageJson.version },
      tags: [
        { name: 'API', description: 'Calls to the upstream, each within the client\'s timeout.' },
        { name: 'Operations', description: 'Probes and metrics, for orchestrators and monitoring.' }
      ]
    },
    transform: ({ schema, url, route }) => ({
      // A route without a schema that is not a GET only exists to answer 405 (e.g. POST /api/smart):
      // it is not an operation of the API.
      schema: route.method !== 'GET' && schema === undefined ? { hide: true } : withVendorKeywords(schema) as FastifySchema,
      // A route declared as '/' in a folder is registered at both /api/smart and /api/smart/, and the
      // route options @fastify/swagger collected end up with the last of them: document the first.
      url: url.replace(/(.)\/$/, '$1')
    })
  })
  await fastify.register(swaggerUi, { routePrefix: '/docs' })
}, { name: 'swagger' })
