import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { ENDPOINTS } from '../../lib/call-policies.js'

/** Methods that exist on the server but not on the API's resources: they get 405, not 404. */
const UNSUPPORTED_METHODS = ['POST', 'PUT', 'PATCH', 'DELETE'] as const

/**
 * What /api/* shares as routes: every endpoint (one folder each beside this file) answers other methods with 405.
 * The files beside this one hold what the endpoints share as code (endpoint.ts, schema.ts).
 */
const apiRoutes: FastifyPluginAsync = async (fastify) => {
  for (const endpoint of ENDPOINTS) {
    const refuseMethod = async (request: FastifyRequest, reply: FastifyReply): Promise<never> => {
      reply.header('allow', 'GET, HEAD')
      throw fastify.httpErrors.methodNotAllowed(`${request.method} is not supported on /api/${endpoint}; use GET.`)
    }
    fastify.route({
      method: [...UNSUPPORTED_METHODS],
      url: `/${endpoint}`,
      // Refused before the body is read: whatever it carries (malformed, unknown type, huge), it is a 405.
      onRequest: refuseMethod,
      handler: refuseMethod
    })
  }
}

export default apiRoutes
