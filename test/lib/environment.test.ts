import t from 'tap'
import { Type } from '@sinclair/typebox'
import { readEnvironment } from '../../lib/environment.js'

const schema = Type.Object({
  COUNT: Type.Integer({ minimum: 0, maximum: 10, default: 1 }),
  RATIO: Type.Number({ minimum: 0, default: 0.5 }),
  NAME: Type.String({ pattern: '^\\S+$', default: 'unnamed', description: 'a name without spaces' }),
  MODE: Type.Union([Type.Literal('fast'), Type.Literal('safe')], { default: 'safe' })
})

t.test('defaults fill in what is unset, and variables the schema does not name are left out', async (t) => {
  t.same(readEnvironment(schema, { PATH: '/usr/bin' }), { COUNT: 1, RATIO: 0.5, NAME: 'unnamed', MODE: 'safe' })
  t.same(readEnvironment(schema, { COUNT: '10', RATIO: '.25', NAME: 'x', MODE: 'fast' }), { COUNT: 10, RATIO: 0.25, NAME: 'x', MODE: 'fast' })
})

t.test('an empty value is a value, unless the caller says it means unset', async (t) => {
  t.throws(() => readEnvironment(schema, { COUNT: '' }), { message: 'COUNT must be an integer in decimal digits (got "")' })
  t.same(readEnvironment(schema, { COUNT: '', NAME: '' }, { emptyMeansUnset: true }), { COUNT: 1, RATIO: 0.5, NAME: 'unnamed', MODE: 'safe' })
})

t.test('numbers must be written in plain decimal, which Ajv coercion alone does not require', async (t) => {
  for (const written of [' 8', '8 ', '0x8', '1e1', '+8', '8.0', 'Infinity']) {
    t.throws(() => readEnvironment(schema, { COUNT: written }),
      { message: `COUNT must be an integer in decimal digits (got ${JSON.stringify(written)})` }, written)
  }
  for (const written of ['1e-1', ' .5', '0x1', '.']) {
    t.throws(() => readEnvironment(schema, { RATIO: written }),
      { message: `RATIO must be a number in decimal notation (got ${JSON.stringify(written)})` }, written)
  }
})

t.test('each message says what the value must be, in the words of the schema where it has them', async (t) => {
  t.throws(() => readEnvironment(schema, { COUNT: '11' }), { message: 'COUNT must be <= 10 (got "11")' })
  t.throws(() => readEnvironment(schema, { COUNT: '-1' }), { message: 'COUNT must be >= 0 (got "-1")' })
  t.throws(() => readEnvironment(schema, { NAME: 'two words' }), { message: 'NAME must be a name without spaces (got "two words")' })
  t.throws(() => readEnvironment(schema, { MODE: 'quick' }), { message: 'MODE must be one of fast, safe (got "quick")' })
})

t.test('one error names every offending variable, badly written ones included, in the order of the schema', async (t) => {
  t.throws(() => readEnvironment(schema, { MODE: 'quick', RATIO: '1e3', COUNT: '99' }),
    { message: 'COUNT must be <= 10 (got "99"); RATIO must be a number in decimal notation (got "1e3"); MODE must be one of fast, safe (got "quick")' })
  t.throws(() => readEnvironment(schema, { COUNT: 'x', NAME: 'ok' }), { message: 'COUNT must be an integer in decimal digits (got "x")' })
})

t.test('a failure tied to no variable keeps env-schema\'s own words', async (t) => {
  const withoutDefault = Type.Object({ NEEDED: Type.String() })
  t.throws(() => readEnvironment(withoutDefault, {}), { message: "env must have required property 'NEEDED'" })
})
