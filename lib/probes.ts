/**
 * Route config for health probes and metrics scrapes: @fastify/under-pressure leaves them alone, because
 * an orchestrator that sees a failing liveness probe under load would restart the busiest instances.
 */
export const notShedUnderLoad = { pressureHandler: (): undefined => undefined }
