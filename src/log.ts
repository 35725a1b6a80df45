/*
 * One pino root logger; components take a child (`logger.child({ component: 'bpf' })`).
 * Logs go to stderr in every command: stdout carries only a command's result (a listing, JSON,
 * rules), so `vipr list --json | jq` stays valid whatever gets logged. Writes are synchronous so
 * the last lines before an exit are not lost.
 */
import { destination, pino, type Logger } from 'pino';

export type { Logger };

const STDERR_FD = 2;

export const logger: Logger = pino(
  {
    level: process.env.VIPR_LOG_LEVEL ?? 'info',
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  destination({ dest: STDERR_FD, sync: true }),
);

export function setLogLevel(level: string): void {
  logger.level = level;
}

export function componentLogger(component: string): Logger {
  return logger.child({ component });
}
