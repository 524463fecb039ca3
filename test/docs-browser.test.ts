import t from 'tap'
import { existsSync } from 'node:fs'
import { chromium } from 'playwright-core'
import { withService } from './helpers/service.js'

/** Debian's Chromium; CI installs it with apt-get (see .ci/run). */
const CHROMIUM = '/usr/bin/chromium'

/** Generous for a shared machine, yet the whole test takes a few seconds. */
const STEP_TIMEOUT_MS = 10_000

/** Chromium's first start on a fresh machine builds its caches: over 10 s on two busy cores. */
const LAUNCH_TIMEOUT_MS = 30_000

const skip = existsSync(CHROMIUM) ? false : `Chromium is not installed at ${CHROMIUM} (CI installs it with apt-get)`

t.test('Swagger UI calls GET /api/smart and shows the answer', { skip, timeout: 60_000 }, async (t) => {
  const { service, upstream } = await withService(t, { script: () => ({ kind: 'raw', body: '{"time": 42}' }) })
  // A fresh temporary profile every launch; nothing of the machine's own Chromium settings is used.
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    timeout: LAUNCH_TIMEOUT_MS,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync']
  })
  // Registered last, so it runs first: the browser lets go of its connections before the service closes.
  t.teardown(() => browser.close())

  const page = await browser.newPage()
  page.setDefaultTimeout(STEP_TIMEOUT_MS)
  const pageErrors: string[] = []
  page.on('pageerror', (error) => pageErrors.push(error.message))

  await page.goto(`${service.url}/docs`)
  const operation = page.locator('.opblock.opblock-get').filter({ hasText: '/api/smart' })
  await operation.locator('.opblock-summary').click()
  await operation.getByRole('button', { name: 'Try it out' }).click()
  await operation.locator('input[placeholder="timeout"]').fill('1000')
  const apiCall = page.waitForResponse((response) => new URL(response.url()).pathname === '/api/smart')
  await operation.getByRole('button', { name: 'Execute' }).click()
  const response = await apiCall
  t.equal(response.status(), 200, 'the browser got a 200')
  t.equal(new URL(response.url()).searchParams.get('timeout'), '1000', 'with the timeout that was filled in')

  const live = operation.locator('.live-responses-table')
  const status = live.locator('tr.response .response-col_status')
  await status.waitFor()
  t.equal((await status.innerText()).trim(), '200', 'the page shows status 200')
  const body = live.locator('tr.response .response-col_description .microlight').first()
  await body.waitFor()
  const text = await body.innerText()
  t.match(text, /"success": true/, 'the page shows the JSON answer')
  t.match(text, /"time": 42/, 'with the upstream answer in it')
  t.equal(upstream.requests.length, 1, 'one upstream call')
  t.same(pageErrors, [], 'no script errors on the page')
})
