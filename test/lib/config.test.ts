import t from 'tap'
import { loadConfig } from '../../lib/config.js'

t.test('defaults match SPEC §3', async (t) => {
  t.same(loadConfig({}), {
    PORT: 8080,
    HOST: '127.0.0.1',
    UPSTREAM_URL: '',
    HEDGE_DELAY_MS: 300,
    HEDGE_REQUESTS: 2,
    HEDGE_BUDGET_TOKENS: 0,
    HEDGE_BUDGET_TOKEN_RATIO: 0.1,
    HEDGE_POLICY: 'fixed',
    HEDGE_QUANTILE: 0.9,
    MAX_PUSHBACK_MS: 30000,
    FANOUT_REQUESTS: 3,
    MAX_TIMEOUT_MS: 60000,
    MAX_BODY_BYTES: 1048576,
    UPSTREAM_MAX_SOCKETS: 1024,
    MAX_CLIENT_CONNECTIONS: 10000,
    LOG_LEVEL: 'info',
    SHUTDOWN_DRAIN_MS: 5000,
    SHUTDOWN_GRACE_MS: 30000,
    OVERLOAD_MAX_WAIT_MS: 200,
    OVERLOAD_HOLD_HEDGES: false,
    RETRY_AFTER_SECONDS: 1
  })
})

t.test('values from the environment are parsed and unknown variables ignored', async (t) => {
  const config = loadConfig({
    PORT: '9000',
    HOST: '0.0.0.0',
    UPSTREAM_URL: 'https://work.example.com/api',
    HEDGE_DELAY_MS: '0',
    HEDGE_REQUESTS: '5',
    MAX_TIMEOUT_MS: '1000',
    MAX_BODY_BYTES: '10',
    UPSTREAM_MAX_SOCKETS: '16',
    LOG_LEVEL: 'debug',
    PATH: '/usr/bin'
  })
  t.match(config, { PORT: 9000, HOST: '0.0.0.0', UPSTREAM_URL: 'https://work.example.com/api', HEDGE_DELAY_MS: 0, HEDGE_REQUESTS: 5, MAX_TIMEOUT_MS: 1000, MAX_BODY_BYTES: 10, UPSTREAM_MAX_SOCKETS: 16, LOG_LEVEL: 'debug' })
  t.notOk('PATH' in config)
})

t.test('an invalid value stops start-up with a message naming the variable', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'eighty' }, /PORT must be an integer in decimal digits \(got "eighty"\)/],
    [{ PORT: '70000' }, /PORT must be <= 65535 \(got "70000"\)/],
    [{ HEDGE_DELAY_MS: '-1' }, /HEDGE_DELAY_MS must be >= 0/],
    [{ HEDGE_DELAY_MS: '1.5' }, /HEDGE_DELAY_MS must be an integer in decimal digits \(got "1.5"\)/],
    [{ HEDGE_REQUESTS: '11' }, /HEDGE_REQUESTS must be <= 10/],
    [{ MAX_TIMEOUT_MS: '0' }, /MAX_TIMEOUT_MS must be >= 1/],
    [{ MAX_TIMEOUT_MS: '2147483648' }, /MAX_TIMEOUT_MS must be <= 2147483647/],
    [{ MAX_BODY_BYTES: 'lots' }, /MAX_BODY_BYTES must be an integer/],
    [{ UPSTREAM_MAX_SOCKETS: '0' }, /UPSTREAM_MAX_SOCKETS must be >= 1/],
    [{ UPSTREAM_MAX_SOCKETS: 'many' }, /UPSTREAM_MAX_SOCKETS must be an integer/],
    [{ MAX_CLIENT_CONNECTIONS: '0' }, /MAX_CLIENT_CONNECTIONS must be >= 1/],
    [{ UPSTREAM_URL: 'ftp://example.com' }, /UPSTREAM_URL must be an http:\/\/ or https:\/\/ URL, or empty for the built-in simulator \(got "ftp:\/\/example.com"\)/],
    [{ UPSTREAM_URL: 'localhost:8081' }, /UPSTREAM_URL/],
    [{ LOG_LEVEL: 'loud' }, /LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent \(got "loud"\)/],
    [{ HOST: '' }, /HOST must NOT have fewer than 1 characters \(got ""\)/],
    [{ SHUTDOWN_GRACE_MS: 'later' }, /SHUTDOWN_GRACE_MS must be an integer/],
    [{ SHUTDOWN_DRAIN_MS: '-1' }, /SHUTDOWN_DRAIN_MS must be >= 0/],
    [{ FANOUT_REQUESTS: '0' }, /FANOUT_REQUESTS must be >= 1/],
    [{ HEDGE_POLICY: 'smart' }, /HEDGE_POLICY must be one of fixed, adaptive \(got "smart"\)/],
    [{ HEDGE_QUANTILE: '1' }, /HEDGE_QUANTILE must be < 1/],
    [{ HEDGE_QUANTILE: '0' }, /HEDGE_QUANTILE must be > 0/],
    [{ MAX_PUSHBACK_MS: '-1' }, /MAX_PUSHBACK_MS must be >= 0/],
    [{ FANOUT_REQUESTS: '11' }, /FANOUT_REQUESTS must be <= 10/],
    [{ OVERLOAD_MAX_WAIT_MS: '-5' }, /OVERLOAD_MAX_WAIT_MS must be >= 0/],
    [{ RETRY_AFTER_SECONDS: '0' }, /RETRY_AFTER_SECONDS must be >= 1/],
    [{ HEDGE_BUDGET_TOKENS: '-1' }, /HEDGE_BUDGET_TOKENS must be >= 0/],
    [{ HEDGE_BUDGET_TOKEN_RATIO: '0' }, /HEDGE_BUDGET_TOKEN_RATIO must be > 0/],
    // Ajv's coercion alone would read these as 80, 80 and 1000.
    [{ PORT: ' 80' }, /PORT must be an integer in decimal digits/],
    [{ PORT: '0x50' }, /PORT must be an integer in decimal digits/],
    [{ MAX_TIMEOUT_MS: '1e3' }, /MAX_TIMEOUT_MS must be an integer in decimal digits/],
    [{ HEDGE_BUDGET_TOKEN_RATIO: '1e-1' }, /HEDGE_BUDGET_TOKEN_RATIO must be a number in decimal notation/],
    [{ OVERLOAD_HOLD_HEDGES: 'yes' }, /OVERLOAD_HOLD_HEDGES must be boolean \(got "yes"\)/]
  ]
  for (const [environment, message] of cases) {
    t.throws(() => loadConfig(environment), message, JSON.stringify(environment))
  }
})

t.test('every invalid value is named at once, not only the first', async (t) => {
  t.throws(() => loadConfig({ PORT: '-1', LOG_LEVEL: 'loud', HEDGE_REQUESTS: '11' }),
    { message: 'PORT must be >= 0 (got "-1"); HEDGE_REQUESTS must be <= 10 (got "11"); LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "loud")' })
})

t.test('a fractional ratio is read as written', async (t) => {
  t.equal(loadConfig({ HEDGE_BUDGET_TOKEN_RATIO: '.25' }).HEDGE_BUDGET_TOKEN_RATIO, 0.25)
  t.equal(loadConfig({ HEDGE_BUDGET_TOKEN_RATIO: '2.' }).HEDGE_BUDGET_TOKEN_RATIO, 2)
})

t.test('a setting that was replaced stops start-up with a message naming its replacement', async (t) => {
  t.throws(() => loadConfig({ OVERLOAD_MAX_EVENT_LOOP_DELAY_MS: '0' }),
    /OVERLOAD_MAX_EVENT_LOOP_DELAY_MS is no longer a setting; use OVERLOAD_MAX_WAIT_MS/)
  t.throws(() => loadConfig({ OVERLOAD_MAX_EVENT_LOOP_UTILIZATION: '0.9', OVERLOAD_MAX_ACCEPT_WAIT_MS: '20' }),
    /OVERLOAD_MAX_EVENT_LOOP_UTILIZATION is no longer a setting; use OVERLOAD_MAX_WAIT_MS .*; OVERLOAD_MAX_ACCEPT_WAIT_MS is no longer a setting/)
})
