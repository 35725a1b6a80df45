/*
 * A stand-in for `vipr run` in lab tests: started by `vipr lab up --agent-main <this file>`, it
 * records how it was started (argv, network namespace, whether /sys/fs/bpf is the BPF filesystem)
 * to $VIPR_FAKE_AGENT_OUT, logs the agent's readiness line, then runs until SIGTERM, like the agent.
 */
import { readlinkSync, statfsSync, writeFileSync } from 'node:fs';

const BPF_FS_MAGIC = 0xcafe4a11;
const out = process.env.VIPR_FAKE_AGENT_OUT;
if (!out) {
  process.stderr.write('fake-agent: VIPR_FAKE_AGENT_OUT is not set\n');
  process.exit(2);
}
writeFileSync(
  out,
  JSON.stringify({
    argv: process.argv.slice(2),
    pid: process.pid,
    netns: readlinkSync('/proc/self/ns/net'),
    bpffs: Number(statfsSync('/sys/fs/bpf').type) === BPF_FS_MAGIC,
  }),
);
// The line `vipr lab up` waits for, as `vipr run` logs it once programs are attached.
process.stdout.write(`${JSON.stringify({ level: 30, msg: 'agent running', fake: true })}\n`);
const keepAlive = setInterval(() => undefined, 1000);
process.on('SIGTERM', () => {
  clearInterval(keepAlive);
  process.stdout.write('fake agent stopping\n');
  process.exit(0);
});
