/**
 * Pins the got internals that lib/got-fast-path.ts relies on, so that a got upgrade that changes one of them fails
 * here, loudly, instead of making attempts slower or leaving connections behind.
 */
import t, { type Test } from 'tap'
import got, { Options, type Request } from 'got'
import { once } from 'node:events'
import { Agent as HttpAgent, createServer, type ClientRequest, type IncomingMessage } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { nativeOptions, prepareOptions, resetAndDestroy } from '../../lib/got-fast-path.js'
import { eventually } from '../helpers/eventually.js'

interface Seen { headers: IncomingMessage['headers'], socket: Socket, closedBy?: 'reset' | 'end' }

async function upstream (t: Test, answer: boolean) {
  const seen: Seen[] = []
  const server = createServer((req, res) => {
    const entry: Seen = { headers: req.headers, socket: req.socket }
    seen.push(entry)
    req.socket.once('error', (error: NodeJS.ErrnoException) => { if (error.code === 'ECONNRESET') entry.closedBy = 'reset' })
    req.socket.once('end', () => { entry.closedBy ??= 'end' })
    if (answer) res.end('{"ok":true}')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const agent = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) }
  t.teardown(() => {
    agent.http.destroy()
    server.closeAllConnections()
    server.close()
  })
  return { seen, agent, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/work` }
}

function body (stream: Request): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = ''
    stream.on('data', (chunk: Buffer) => { text += chunk.toString() })
    stream.once('end', () => resolve(text))
    stream.once('error', reject)
  })
}

t.test('prepared options are frozen, and a copy per attempt owns its headers and timeouts', async (t) => {
  const { url, agent } = await upstream(t, true)
  const prepared = prepareOptions(url, agent)
  t.ok(Object.isFrozen(prepared.headers) && Object.isFrozen(prepared.timeout), 'options.freeze() freezes their headers and timeouts')
  const copy = new Options(undefined, undefined, prepared)
  copy.headers['x-request-id'] = 'copy'
  copy.timeout.request = 123
  t.equal(prepared.headers['x-request-id'], undefined, 'the prepared headers are untouched')
  t.equal(prepared.timeout.request, undefined, 'the prepared timeouts are untouched')
  t.same(prepared.cacheOptions, {}, 'the response-cache settings stay an empty object')
  t.equal(prepared.isStream, true)
  t.same(prepared.retry.limit, 0, 'no retries of got\'s own')
})

t.test('got(undefined, undefined, copy) makes the request through the prepared request function, with only method, headers and agent', async (t) => {
  const { url, agent, seen } = await upstream(t, true)
  const copy = new Options(undefined, undefined, prepareOptions(url, agent))
  copy.headers['x-request-id'] = 'pinned'
  const stream = got(undefined, undefined, copy) as Request
  const [clientRequest] = await once(stream, 'request') as [ClientRequest]
  t.equal(await body(stream), '{"ok":true}')
  t.equal(seen[0]?.headers['x-request-id'], 'pinned', 'the copy\'s header reached the upstream')
  t.equal(clientRequest.method, 'GET')
  t.equal((clientRequest as ClientRequest & { agent: unknown }).agent, agent.http, 'through the keep-alive agent')
  t.same(Object.keys(nativeOptions({ method: 'GET', headers: {}, agent: agent.http, host: 'x', timeout: 5 })).sort(), ['agent', 'headers', 'method'])
})

t.test('resetAndDestroy resets the connection (the upstream sees ECONNRESET) and nothing is left to throw', async (t) => {
  const { url, agent, seen } = await upstream(t, false)
  const stream = got(undefined, undefined, new Options(undefined, undefined, prepareOptions(url, agent))) as Request
  const [clientRequest] = await once(stream, 'request') as [ClientRequest]
  await eventually(() => seen.length > 0, 5000)
  t.ok(stream.socket !== undefined, 'got exposes the socket of the request')
  const errors: Error[] = []
  stream.on('error', (error) => errors.push(error))
  resetAndDestroy(stream, clientRequest)
  await eventually(() => seen[0]?.closedBy !== undefined, 5000)
  t.equal(seen[0]?.closedBy, 'reset', 'a reset (RST), not an orderly close (FIN)')
  t.equal(stream.destroyed, true)
  await sleep(20)
  t.same(errors, [], 'got reports no error for the destroyed request')
})

t.test('destroy() cancels got\'s own timers: no timeout fires for a request already given up', async (t) => {
  const { url, agent } = await upstream(t, false)
  const copy = new Options(undefined, undefined, prepareOptions(url, agent))
  copy.timeout.request = 50
  const stream = got(undefined, undefined, copy) as Request
  const errors: Error[] = []
  stream.on('error', (error) => errors.push(error))
  await once(stream, 'request')
  stream.destroy()
  await sleep(120)
  t.same(errors.map((error) => error.name), [], 'no TimeoutError after destroy()')
})
