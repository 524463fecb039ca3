import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'

/**
 * `npm audit` of the production dependencies: a known high or critical vulnerability fails `npm test`.
 * The audit needs the registry's advisory endpoint; where the registry refuses it, the test is skipped with
 * the registry's answer as the reason, since that says nothing about the dependencies.
 */

interface AuditReport {
  metadata?: { vulnerabilities: Record<'info' | 'low' | 'moderate' | 'high' | 'critical', number> }
  vulnerabilities?: Record<string, { severity: string, via: unknown[] }>
  /** Set instead of the above when the registry answered the audit request with an error. */
  message?: string
}

async function runAudit (): Promise<AuditReport> {
  // tap's process tracker would record coverage of npm itself.
  const child = spawn('npm', ['audit', '--omit=dev', '--json'], {
    env: { ...process.env, _TAPJS_PROCESSINFO_COVERAGE_: '0' },
    stdio: ['ignore', 'pipe', 'ignore']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString('utf8') })
  await once(child, 'exit')
  return JSON.parse(output) as AuditReport
}

const report = await runAudit()
const skip = report.metadata === undefined && `the registry refused the audit: ${report.message ?? 'no report'}`

t.test('no production dependency has a known high or critical vulnerability', { skip }, async (t) => {
  const serious = Object.entries(report.vulnerabilities ?? {})
    .filter(([, { severity }]) => severity === 'high' || severity === 'critical')
    .map(([name, { severity }]) => `${name} (${severity})`)
  t.same(serious, [], 'npm audit --omit=dev lists none')
  t.equal((report.metadata?.vulnerabilities.high ?? 0) + (report.metadata?.vulnerabilities.critical ?? 0), serious.length)
})
