/* Turns any error into the one line the CLI prints. */
export function formatError(err: unknown): string {
  if (err instanceof Error) {
    return err.message.split('\n')[0] ?? err.name;
  }
  return String(err);
}
