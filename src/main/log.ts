// JSONL logs through pino on stderr; `--log-level` or ZTGATE_LOG_LEVEL picks the level,
// ZTGATE_LOG_PRETTY=1 asks for one readable line per record instead of JSON.
import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

const LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parseLogLevel(value: string | undefined, fallback: LevelWithSilent = 'info'): LevelWithSilent {
  if (value === undefined || value === '') return fallback;
  const level = value.toLowerCase() as LevelWithSilent;
  if (!LEVELS.includes(level)) throw new RangeError(`log: unknown level '${value}' (one of ${LEVELS.join(', ')})`);
  return level;
}

export function createLogger(level: LevelWithSilent, bindings: Record<string, unknown> = {}): Logger {
  const pretty = process.env['ZTGATE_LOG_PRETTY'] === '1';
  const destination = pino.destination({ fd: 2, sync: true });
  const logger = pino(
    {
      level,
      base: { pid: process.pid, ...bindings },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pretty ? prettyStream() : destination,
  );
  return logger;
}

/** One line per record: time, level, message, then the remaining fields as compact JSON. */
function prettyStream(): { write(line: string): void } {
  return {
    write(line: string): void {
      const record = JSON.parse(line) as Record<string, unknown>;
      const { time, level, msg, pid: _pid, ...rest } = record;
      const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
      process.stderr.write(`${String(time)} ${String(level).toUpperCase()} ${String(msg)}${extra}\n`);
    },
  };
}
