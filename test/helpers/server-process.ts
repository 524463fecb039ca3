import type { Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { eventually } from './eventually.js'

export interface ServerProcess {
  child: ChildProcess
  output (): string
  exited: Promise<number | null>
}

/** Runs the service in a real child process: server.ts by default, or a compiled entry such as dist/server.js. */
export function runServer (environment: Record<string, string>, extraNodeArgs: string[] = [],
  entry: string = 'server.ts'): ServerProcess {
  // The TypeScript source runs through this process's loader (and coverage); the build runs as it ships.
  const nodeArgs = entry.endsWith('.ts') ? [...process.execArgv, ...extraNodeArgs] : extraNodeArgs
  const child = spawn(process.execPath, [...nodeArgs, entry], {
    env: { ...process.env, PORT: '0', ...environment },
    // The IPC channel lets a test trigger a crash inside the child.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc']
  })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const exited = once(child, 'exit').then(([code]) => code as number | null)
  return { child, output: () => output, exited }
}

/** The URL the server logs it listens at, once it has; fails the test, with the server's output, after 20 s. */
export async function listeningUrl (t: Test, server: Pick<ServerProcess, 'output'>): Promise<string> {
  const url = (): string | undefined => /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(server.output())?.[1]
  try {
    await eventually(() => url() !== undefined, 20_000, 50)
  } catch {
    t.fail(`server did not start:\n${server.output()}`)
    throw new Error('server did not start')
  }
  return url() as string
}
