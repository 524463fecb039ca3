/** What every scenario of bench/scenarios/ gets and gives back. */
import type { Target } from './report.js'

export interface ScenarioContext {
  /** Start each service process with --cpu-prof, writing into bench/profiles/<name>/. */
  cpuProfile: boolean
  /**
   * Where the plots go, relative to the repository root: bench/plots, or bench/plots/node<major> when the
   * processes under test run on another major version of Node than the bench (--node).
   */
  plotsDir: string
  /** One line of progress on stderr, so stdout carries only the report. */
  progress (message: string): void
}

export interface ScenarioReport {
  /** Printed one after the other. */
  tables: string[]
  targets: Target[]
  /** Stored in bench/results.json (or results-node<major>.json, see plotsDir) under the scenario's name. */
  results: unknown
}

export interface Scenario {
  name: string
  run (context: ScenarioContext): Promise<ScenarioReport>
}

/** The folder name of a service's CPU profile, or undefined when not profiling. */
export function profileName (context: ScenarioContext, name: string): string | undefined {
  return context.cpuProfile ? name : undefined
}
