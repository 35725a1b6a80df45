/*
 * The one-line error contract in tests: `fn` must throw a ConfigError whose message is one line;
 * returns the message for the test to match.
 */
import { ConfigError } from '../../src/errors.js';

export function oneLineConfigError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected a ConfigError');
}
