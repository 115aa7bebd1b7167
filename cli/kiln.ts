// The `kiln` command: `npx kiln <command>` (bin/kiln.mjs), or `tsx cli/kiln.ts <command>`. The
// commands and their help are cli/commands.ts.
import { UsageError } from "./command.ts";
import { COMMANDS } from "./commands.ts";

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return [
    "usage: kiln <command> [flags]",
    "",
    "commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}   ${c.summary}`),
    "",
    "`kiln <command> --help` shows a command's flags.",
  ].join("\n");
}

const wantsHelp = (args: string[]) => args.some((a) => a === "--help" || a === "-h");

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    const topic = name === "help" ? args[0] : undefined;
    if (topic && COMMANDS[topic]) console.log(COMMANDS[topic].help);
    else console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`kiln: no command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (wantsHelp(args)) {
    console.log(command.help);
    return 0;
  }
  try {
    await command.run(args);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`kiln ${name}: ${e.message}\n\n${command.help}`);
      return 2;
    }
    console.error(`kiln ${name}: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
