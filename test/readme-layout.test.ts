import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..')

/** The first column of the README's layout table: each row's paths, relative ones resolved against the first. */
function layoutRows (): string[][] {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const table = readme.slice(readme.indexOf('\nLayout'))
  const rows = table.split('\n').slice(1).filter((line) => line.startsWith('| `'))
  return rows.map((row) => {
    const [first = '', ...others] = [...(row.split(' | ')[0] ?? '').matchAll(/`([^`]+)`/g)].map((match) => match[1] ?? '')
    // `routes/api/smart/`, `first/`: a path that does not start in the first one's top folder is beside it.
    const topFolder = first.split('/')[0] ?? ''
    const base = posix.dirname(first.replace(/\/$/, ''))
    return [first, ...others.map((path) => path.startsWith(`${topFolder}/`) ? path : posix.join(base, path))]
  })
}

const listed = layoutRows().flat()

t.test('the README layout table names paths that exist', async (t) => {
  t.ok(listed.length > 20, `${listed.length} paths read from the table`)
  for (const path of listed) t.ok(existsSync(join(repoRoot, path)), path)
})

t.test('every source file of the service and the simulator is in the README layout table', async (t) => {
  const tracked = execFileSync('git', ['ls-files', '*.ts'], { cwd: repoRoot, encoding: 'utf8' }).split('\n')
  const sources = tracked.filter((path) => /^(app|server)\.ts$|^(lib|plugins|routes|simulator)\//.test(path))
  t.ok(sources.length > 30, `${sources.length} source files`)
  for (const path of sources) {
    t.ok(listed.some((entry) => entry === path || (entry.endsWith('/') && path.startsWith(entry))), path)
  }
})
