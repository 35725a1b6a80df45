/*
 * JSON vipr reads from disk goes through one validator: a record with a bad field is one line
 * naming the file, what it is, the first bad field and the fix — never a TypeError later, never a
 * silently wrong value. Each record is read through the function its users call, from the real
 * path it lives at; every file a test writes is removed.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { JsonFileError, fieldPath, parseJson, readJsonFile } from '../../src/json-file.js';
import { readServiceNames } from '../../src/bpf/inspect.js';
import { cleanupDatapath } from '../../src/bpf/datapath.js';
import { SOCK_HOOKS, sockLinkPinPath, socketLbRecordPath, socketLbStatus } from '../../src/bpf/socket-lb.js';
import { labStateDir, labStateFile, readLabState } from '../../src/lab/state.js';
import { PROGRAM_RESULT } from '../../src/bench/program-records.js';
import { STATE_DIR, serviceNamesPath } from '../../src/paths.js';

/** A pin dir nobody uses (never created: these readers only derive record paths from it). */
const PIN_DIR = `/sys/fs/bpf/vipr-json-test-${process.pid}`;
const written: string[] = [];

function writeRecord(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  written.push(path);
}

afterEach(() => {
  for (const p of written.splice(0)) rmSync(p, { recursive: true, force: true });
});

function thrown(f: () => unknown): JsonFileError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(JsonFileError);
    expect((err as Error).message).not.toContain('\n');
    return err as JsonFileError;
  }
  throw new Error('expected a JsonFileError');
}

describe('the validator', () => {
  test('fields are named as code names them', () => {
    expect(fieldPath(['nodes', 0, 'pinDir'])).toBe('nodes[0].pinDir');
    expect(fieldPath(['7'])).toBe('["7"]');
    expect(fieldPath([])).toBe('');
  });

  test('not JSON, and a wrong top-level type', () => {
    const kind = { what: 'bench program result', schema: PROGRAM_RESULT.schema, fix: 'run it again' };
    expect(thrown(() => parseJson('{"services": 1,', 'r.json', kind)).message).toMatch(/^r\.json: bench program result is not JSON \(.+\); run it again$/);
    expect(thrown(() => parseJson('[]', 'r.json', kind)).message).toBe('r.json: bad bench program result: Expected object, received array; run it again');
  });
});

describe('the service-names record', () => {
  const path = serviceNamesPath(PIN_DIR);

  test('read as svc_id → name; none yet is an empty map', () => {
    expect(readServiceNames(PIN_DIR)).toEqual(new Map());
    writeRecord(path, JSON.stringify({ 7: 'default/web:http' }));
    expect(readServiceNames(PIN_DIR)).toEqual(new Map([[7, 'default/web:http']]));
  });

  test('a name that is not a string, or a key that is not an id, is one line', () => {
    writeRecord(path, JSON.stringify({ 7: 5 }));
    expect(thrown(() => readServiceNames(PIN_DIR)).message).toBe(
      `${path}: bad service-names record at ["7"]: Expected string, received number; delete it: the agent writes it again on its next sync`,
    );
    writeRecord(path, JSON.stringify({ web: 'default/web:http' }));
    expect(thrown(() => readServiceNames(PIN_DIR)).message).toContain('at web: expected a service id;');
    writeRecord(path, '{"7": "default/web:ht');
    expect(thrown(() => readServiceNames(PIN_DIR)).message).toMatch(new RegExp(`^${path}: service-names record is not JSON \\(`));
  });
});

describe('the attachment (clsact / XDP) record', () => {
  const path = join(STATE_DIR, `${basename(PIN_DIR)}.clsact.json`);

  test('an unknown attach mode stops cleanup before it removes anything, with one line', () => {
    writeRecord(path, JSON.stringify([{ iface: 'lo', direction: 'ingress', how: 'tc' }, { iface: 'lo', direction: 'xdp', how: 'xdp-offload' }]));
    const e = thrown(() => cleanupDatapath(PIN_DIR));
    expect(e.field).toBe('[1].how');
    expect(e.message).toMatch(
      new RegExp(`^${path}: bad attachment record at \\[1\\]\\.how: Invalid enum value\\. Expected .*'xdp-generic', received 'xdp-offload'; delete it, then remove`),
    );
  });
});

describe('the socket LB record', () => {
  let pinDir: string;
  beforeEach(() => {
    // socketLbStatus looks for the pinned links first: plain files stand in for them.
    pinDir = mkdtempSync(join(tmpdir(), 'vipr-json-sock-'));
    written.push(pinDir);
    mkdirSync(dirname(sockLinkPinPath(pinDir, SOCK_HOOKS[0]!.hook)), { recursive: true });
    for (const h of SOCK_HOOKS) writeFileSync(sockLinkPinPath(pinDir, h.hook), '');
  });

  test('read when valid, absent means on somewhere, a bad field is one line', () => {
    const path = socketLbRecordPath(pinDir);
    expect(socketLbStatus(pinDir)).toMatchObject({ on: true, cgroup: null, hostNsOnly: null });
    writeRecord(path, JSON.stringify({ cgroup: '/sys/fs/cgroup/lab', hostNsOnly: true }));
    expect(socketLbStatus(pinDir)).toMatchObject({ on: true, cgroup: '/sys/fs/cgroup/lab', hostNsOnly: true });
    writeRecord(path, JSON.stringify({ cgroup: '/sys/fs/cgroup/lab', hostNsOnly: 'yes' }));
    expect(thrown(() => socketLbStatus(pinDir)).message).toBe(
      `${path}: bad socket LB record at hostNsOnly: Expected boolean, received string; delete it: the agent writes it again when it attaches socket LB`,
    );
  });
});

describe('lab state', () => {
  const name = `vipr-json-test-${process.pid}`;
  const node = {
    host: 'node', nodeName: 'node', netns: `${name}-node`, nodeIp: null, podCidr: '10.244.0.0/24',
    pinDir: `/sys/fs/bpf/vipr-${name}`, agentIfaces: ['eth0'], agentLog: `/run/vipr/lab/${name}/agent.log`,
  };
  const state = {
    version: 1, name, phase: 'up', createdAt: '2026-12-01T00:00:00.000Z', backends: 2, stateDir: labStateDir(name),
    pinDir: node.pinDir, manifestsDir: `/run/vipr/lab/${name}/manifests`, defaultManifests: true, agentEnabled: true,
    namespaces: [`${name}-node`], hosts: [{ name: 'node', role: 'node', netns: `${name}-node`, interfaces: [{ ifname: 'eth0', addresses: ['10.0.0.1/24'] }] }],
    agentIfaces: ['eth0'], nodes: [node], underlay: null, processes: [],
  };
  afterEach(() => rmSync(labStateDir(name), { recursive: true, force: true }));

  test('a valid state reads back; fields a newer vipr added are kept', async () => {
    writeRecord(labStateFile(name), JSON.stringify({ ...state, addedLater: { x: 1 } }));
    const read = await readLabState(name);
    expect(read).toMatchObject({ kind: 'ok', state: { ...state, addedLater: { x: 1 } } });
  });

  test('a state from before labs had nodes gets its one node', async () => {
    const { nodes: _nodes, underlay: _underlay, ...old } = state;
    writeRecord(labStateFile(name), JSON.stringify(old));
    const read = await readLabState(name);
    expect(read.kind === 'ok' && read.state.nodes.map((n) => n.pinDir)).toEqual([state.pinDir]);
  });

  test('a bad field deep inside is unreadable, naming the field', async () => {
    writeRecord(labStateFile(name), JSON.stringify({ ...state, nodes: [{ ...node, pinDir: 5 }] }));
    await expect(readLabState(name)).resolves.toEqual({ kind: 'unreadable', reason: 'bad field nodes[0].pinDir: Expected string, received number' });
    writeRecord(labStateFile(name), JSON.stringify({ ...state, processes: [{ kind: 'agent', host: 'node', pid: -1, startTime: 1, argv: [], log: 'x' }] }));
    await expect(readLabState(name)).resolves.toEqual({ kind: 'unreadable', reason: 'bad field processes[0].pid: Number must be greater than 0' });
  });
});

describe('bench program result', () => {
  test('a result the worker did not write is one line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipr-json-bench-'));
    written.push(dir);
    const file = join(dir, 'program.json');
    const good = { services: 10, syncAllMs: 5.5, syncOneMs: [0.1], mapAllMs: null, mapOneMs: null, positions: null };
    writeFileSync(file, JSON.stringify(good));
    expect(readJsonFile(file, PROGRAM_RESULT)).toEqual(good);
    writeFileSync(file, JSON.stringify({ ...good, syncOneMs: [0.1, '0.2'] }));
    expect(thrown(() => readJsonFile(file, PROGRAM_RESULT)).message).toBe(
      `${file}: bad bench program result at syncOneMs[1]: Expected number, received string; the program worker wrote something else: rebuild (make build) and run vipr bench again`,
    );
    rmSync(file);
    expect(thrown(() => readJsonFile(file, PROGRAM_RESULT)).message).toMatch(/: bench program result is missing; /);
  });
});
