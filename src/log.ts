/* One pino root logger; components take a child (`logger.child({ component: 'bpf' })`). */
import { pino, type Logger } from 'pino';

export type { Logger };

export const logger: Logger = pino({
  level: process.env.VIPR_LOG_LEVEL ?? 'info',
  base: { pid: process.pid },
  timestamp: pino.stdTimeFunctions.isoTime,
});

export function setLogLevel(level: string): void {
  logger.level = level;
}

export function componentLogger(component: string): Logger {
  return logger.child({ component });
}
