// Command-line options for the bench, perf and demo scripts: node's parseArgs, plus `--help`, which
// prints the script's header comment (where each script documents its options), and, for an
// unknown or malformed option, one line that names it instead of a stack trace.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** The comment block at the top of a script's source, without its `//` markers. */
export function headerComment(source: string): string {
  const lines: string[] = [];
  for (const line of source.split('\n')) {
    if (!line.startsWith('//')) break;
    lines.push(line.replace(/^\/\/ ?/, ''));
  }
  return lines.join('\n');
}

/** parseArgs(config).values for the script at `scriptFile`; exits on `--help` (0) and on a bad option (2). */
export function parseToolArgs<const T extends ParseArgsConfig>(scriptFile: string, config: T): ReturnType<typeof parseArgs<T>>['values'] {
  const args = config.args ?? process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${headerComment(readFileSync(scriptFile, 'utf8'))}\n`);
    process.exit(0);
  }
  try {
    return parseArgs(config).values;
  } catch (error) {
    // parseArgs reports unknown options, missing values and stray positionals as TypeErrors with
    // an ERR_PARSE_ARGS_* code; anything else is a bug and keeps its stack.
    const code = error instanceof TypeError ? (error as TypeError & { code?: unknown }).code : undefined;
    if (typeof code !== 'string' || !code.startsWith('ERR_PARSE_ARGS')) throw error;
    process.stderr.write(`${basename(scriptFile)}: ${error instanceof Error ? error.message : String(error)} (--help lists the options)\n`);
    process.exit(2);
  }
}
