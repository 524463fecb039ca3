/**
 * The yardstick of the throughput scenario: the least a got-based proxy does per request. A plain node:http
 * server; per request one GET to UPSTREAM_URL through a single got instance, and the body passed back.
 * Everything the service does beyond this (validation, hedging, deadlines, metrics, logs) is its overhead.
 *
 * The bench runs it as its own process, compiled to plain JavaScript like the service (see compiledEntry);
 * by hand: PORT=8090 UPSTREAM_URL=http://127.0.0.1:8081/ npx tsx bench/minimal-got-proxy.ts
 */
import got from 'got'
import { Agent, createServer } from 'node:http'

const upstreamUrl = process.env.UPSTREAM_URL ?? ''
const port = Number(process.env.PORT ?? '0')
if (upstreamUrl === '') throw new Error('UPSTREAM_URL is required')

// The same transport choices as the service: one keep-alive pool, no retries of got's own.
const agent = new Agent({ keepAlive: true })
const client = got.extend({ agent: { http: agent }, retry: { limit: 0 } })

const server = createServer((_request, response) => {
  client.get(upstreamUrl).buffer().then((body) => {
    response.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
    response.end(body)
  }, () => {
    response.writeHead(502)
    response.end()
  })
})

server.listen(port, '127.0.0.1')
process.once('SIGTERM', () => {
  server.close()
  server.closeAllConnections()
  agent.destroy()
})
