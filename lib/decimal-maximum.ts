import type { Plugin } from 'ajv'

/**
 * Ajv keyword `decimalMaximum`: a string of decimal digits must not stand for a number above the limit.
 *
 * Query parameters arrive as strings, and the `timeout` schema keeps them strings on purpose: Ajv's
 * type coercion would turn "1e3", " 10" or "0x10" into numbers. JSON Schema's `maximum` only applies to
 * numbers, so this keyword compares the digits' value instead. Strings that are not plain digits pass:
 * rejecting them is the `pattern` keyword's job, so each bad input fails exactly one keyword.
 */
export const decimalMaximum: Plugin<unknown> = (ajv) => ajv.addKeyword({
  keyword: 'decimalMaximum',
  type: 'string',
  schemaType: 'number',
  validate: (maximum: number, value: string) => !/^[0-9]+$/.test(value) || Number(value) <= maximum
})
