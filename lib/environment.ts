/**
 * Reads a process's settings from its environment against a TypeBox schema, through env-schema: the service's
 * (lib/config.ts) and the simulator's (simulator/env.ts) are read the same way and fail the same way.
 */
import envSchema from 'env-schema'
import type { Static, TObject, TSchema } from '@sinclair/typebox'

export interface ReadOptions {
  /** Treat `NAME=` like an unset NAME, so that a compose file can pass `${NAME:-}` through. */
  emptyMeansUnset?: boolean
}

type Environment = Record<string, string | undefined>

/** What Ajv reports about one failing value (the subset of its ErrorObject read here). */
interface SchemaError {
  instancePath: string
  message: string
}

/**
 * The numbers a person writes: Ajv's type coercion alone would also accept ' 80', '0x50' and '1e3'.
 * A sign is let through so that '-1' is reported against the minimum, which says more than "not a number".
 */
const DECIMAL_NOTATION: Record<string, { pattern: RegExp, wording: string }> = {
  integer: { pattern: /^-?[0-9]+$/, wording: 'an integer in decimal digits' },
  number: { pattern: /^-?([0-9]+(\.[0-9]*)?|\.[0-9]+)$/, wording: 'a number in decimal notation' }
}

/**
 * Returns the typed settings, with defaults filled in and variables the schema does not name left out.
 * Throws an Error naming every offending variable with what it must be and what it was, e.g.
 * `PORT must be <= 65535 (got "70000")`.
 */
export function readEnvironment<Schema extends TObject> (schema: Schema, environment: Environment,
  options: ReadOptions = {}): Static<Schema> {
  const data = settingsOf(schema, environment, options)
  const problems = notationProblems(schema, data)
  // The rest is validated even when some value was badly written, so that one start-up names every mistake.
  const wellWritten = Object.fromEntries(Object.entries(data).filter(([name]) => !problems.has(name)))
  try {
    const settings = envSchema<Static<Schema>>({ schema, data: wellWritten, env: false })
    if (problems.size === 0) return settings
  } catch (error) {
    addSchemaProblems(problems, schema, error)
  }
  const inSchemaOrder = Object.keys(schema.properties).filter((name) => problems.has(name))
  throw new Error(inSchemaOrder.map((name) => `${name} ${problems.get(name)} (got ${JSON.stringify(data[name])})`).join('; '))
}

function settingsOf (schema: TObject, environment: Environment, options: ReadOptions): Record<string, string> {
  const data: Record<string, string> = {}
  for (const name of Object.keys(schema.properties)) {
    const value = environment[name]
    if (value === undefined || (value === '' && options.emptyMeansUnset === true)) continue
    data[name] = value
  }
  return data
}

/** Numbers not written in plain decimal, by variable name, with what they must be. */
function notationProblems (schema: TObject, data: Record<string, string>): Map<string, string> {
  const problems = new Map<string, string>()
  for (const [name, property] of Object.entries(schema.properties)) {
    const value = data[name]
    const notation = DECIMAL_NOTATION[String(property.type)]
    if (value !== undefined && notation !== undefined && !notation.pattern.test(value)) {
      problems.set(name, `must be ${notation.wording}`)
    }
  }
  return problems
}

/** Ajv reports a union (e.g. LOG_LEVEL's levels) as one error per branch: the first one, or the schema, says it best. */
function addSchemaProblems (problems: Map<string, string>, schema: TObject, error: unknown): void {
  const errors = (error as { errors: SchemaError[] }).errors
  const before = problems.size
  for (const [name, property] of Object.entries(schema.properties)) {
    const firstError = errors.find((candidate) => candidate.instancePath === `/${name}`)
    if (firstError !== undefined) problems.set(name, requirement(property, firstError.message))
  }
  // A failure tied to no variable (a schema without a default for a setting nobody set) keeps env-schema's words.
  if (problems.size === before) throw error
}

/** What a value must be, in the words of its schema: its description, its allowed literals, or Ajv's message. */
function requirement (schema: TSchema, ajvMessage: string): string {
  if (typeof schema.description === 'string') return `must be ${schema.description}`
  const literals = (schema.anyOf as TSchema[] | undefined)?.map((branch) => branch.const as unknown)
  if (literals !== undefined && literals.every((literal) => typeof literal === 'string')) {
    return `must be one of ${literals.join(', ')}`
  }
  return ajvMessage
}
