import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Checks `condition` every `everyMs` until it holds, and resolves with how long that took, in ms. Rejects once
 * `withinMs` have passed without it holding, so that a wait that never ends fails with a reason instead of
 * running into the test's time limit. A condition that throws ends the wait with its error.
 */
export async function eventually (condition: () => boolean | Promise<boolean>, withinMs: number, everyMs = 5): Promise<number> {
  const startedAt = performance.now()
  while (!await condition()) {
    if (performance.now() - startedAt > withinMs) throw new Error(`condition not met within ${withinMs} ms`)
    await sleep(everyMs)
  }
  return performance.now() - startedAt
}
