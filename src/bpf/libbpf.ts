/*
 * The only file that calls libbpf (Debian's libbpf1, 1.1) or libc: every foreign call of vipr
 * goes through the typed functions below, so the FFI (koffi) stays swappable.
 *
 * Conventions: libbpf 1.x returns -errno from int functions and NULL + errno from pointer ones;
 * both become a BpfError carrying the operation, the errno and libbpf's last message. libbpf's
 * own log is routed to pino through its print callback (formatted by libc's vsnprintf, since
 * it hands us a va_list).
 */
import koffi from 'koffi';
import { BpfError } from '../errors.js';
import { componentLogger } from '../log.js';

const log = componentLogger('libbpf');

/* libbpf print levels */
const LIBBPF_WARN = 0;
const LIBBPF_INFO = 1;

/*
 * koffi's type registry lives in the native addon, once per process, while this module may be
 * evaluated more than once in a process (jest gives every test file its own module registry and
 * global object): a named type that exists already is used by its name.
 */
function named<T>(name: string, create: () => T): T | string {
  try {
    return create();
  } catch (err) {
    // Not `instanceof Error`: koffi's errors may come from another realm.
    const message = (err as { message?: unknown } | null)?.message;
    if (typeof message === 'string' && message.includes(`Duplicate type name '${name}'`)) return name;
    throw err;
  }
}

function bind() {
  const libbpf = koffi.load('libbpf.so.1');
  const libc = koffi.load('libc.so.6');

  named('bpf_object', () => koffi.opaque('bpf_object'));
  named('bpf_program', () => koffi.opaque('bpf_program'));
  named('bpf_map', () => koffi.opaque('bpf_map'));

  const OpenOpts = named('bpf_object_open_opts', () => koffi.struct('bpf_object_open_opts', {
    sz: 'size_t',
    object_name: 'const char *',
    relaxed_maps: 'bool',
    pin_root_path: 'const char *',
    attach_prog_fd_removed: 'uint32_t',
    kconfig: 'const char *',
    btf_custom_path: 'const char *',
    kernel_log_buf: 'void *',
    kernel_log_size: 'size_t',
    kernel_log_level: 'uint32_t',
  }));

  const TcHook = named('bpf_tc_hook', () => koffi.struct('bpf_tc_hook', {
    sz: 'size_t',
    ifindex: 'int',
    attach_point: 'int',
    parent: 'uint32_t',
  }));

  const TcOpts = named('bpf_tc_opts', () => koffi.struct('bpf_tc_opts', {
    sz: 'size_t',
    prog_fd: 'int',
    flags: 'uint32_t',
    prog_id: 'uint32_t',
    handle: 'uint32_t',
    priority: 'uint32_t',
  }));

  const BatchOpts = named('bpf_map_batch_opts', () => koffi.struct('bpf_map_batch_opts', {
    sz: 'size_t',
    elem_flags: 'uint64_t',
    flags: 'uint64_t',
  }));

  const TestRunOpts = named('bpf_test_run_opts', () => koffi.struct('bpf_test_run_opts', {
    sz: 'size_t',
    data_in: 'void *',
    data_out: 'void *',
    data_size_in: 'uint32_t',
    data_size_out: 'uint32_t',
    ctx_in: 'void *',
    ctx_out: 'void *',
    ctx_size_in: 'uint32_t',
    ctx_size_out: 'uint32_t',
    retval: 'uint32_t',
    repeat: 'int',
    duration: 'uint32_t',
    flags: 'uint32_t',
    cpu: 'uint32_t',
    batch_size: 'uint32_t',
  }));

  /* libbpf 1.1's struct bpf_link_create_opts up to target_btf_id (sz says how much we pass). */
  const LinkCreateOpts = named('bpf_link_create_opts', () => koffi.struct('bpf_link_create_opts', {
    sz: 'size_t',
    flags: 'uint32_t',
    iter_info: 'void *',
    iter_info_len: 'uint32_t',
    target_btf_id: 'uint32_t',
  }));

  const PrintFn = named('libbpf_print_fn', () => koffi.proto('int libbpf_print_fn(int level, const char *fmt, void *args)'));

  const fns = {
    libbpf_set_print: libbpf.func('void *libbpf_set_print(libbpf_print_fn *fn)'),
    libbpf_num_possible_cpus: libbpf.func('int libbpf_num_possible_cpus(void)'),
    bpf_object__open_file: libbpf.func(
      'bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)',
    ),
    bpf_object__load: libbpf.func('int bpf_object__load(bpf_object *obj)'),
    bpf_object__close: libbpf.func('void bpf_object__close(bpf_object *obj)'),
    bpf_object__find_program_by_name: libbpf.func(
      'bpf_program *bpf_object__find_program_by_name(bpf_object *obj, const char *name)',
    ),
    bpf_object__find_map_by_name: libbpf.func(
      'bpf_map *bpf_object__find_map_by_name(bpf_object *obj, const char *name)',
    ),
    bpf_map__fd: libbpf.func('int bpf_map__fd(bpf_map *map)'),
    bpf_object__next_map: libbpf.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
    bpf_map__name: libbpf.func('const char *bpf_map__name(const bpf_map *map)'),
    bpf_map__max_entries: libbpf.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
    bpf_map__set_max_entries: libbpf.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
    bpf_link_create_iter: libbpf.func('bpf_link_create', 'int', ['int', 'int', 'int', koffi.pointer(LinkCreateOpts)]),
    bpf_program__fd: libbpf.func('int bpf_program__fd(bpf_program *prog)'),
    bpf_map_update_elem: libbpf.func(
      'int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)',
    ),
    bpf_map_lookup_elem: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
    bpf_map_delete_elem: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
    bpf_map_get_next_key: libbpf.func(
      'int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)',
    ),
    bpf_map_update_batch: libbpf.func(
      'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)',
    ),
    bpf_map_delete_batch: libbpf.func(
      'int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)',
    ),
    bpf_map_lookup_batch: libbpf.func(
      'int bpf_map_lookup_batch(int fd, void *in_batch, _Out_ void *out_batch, _Out_ void *keys, _Out_ void *values, _Inout_ uint32_t *count, const bpf_map_batch_opts *opts)',
    ),
    bpf_map_create: libbpf.func(
      'int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)',
    ),
    bpf_obj_get: libbpf.func('int bpf_obj_get(const char *path)'),
    bpf_obj_pin: libbpf.func('int bpf_obj_pin(int fd, const char *path)'),
    bpf_obj_get_info_by_fd: libbpf.func(
      'int bpf_obj_get_info_by_fd(int fd, _Out_ void *info, _Inout_ uint32_t *len)',
    ),
    bpf_link_create: libbpf.func(
      'int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)',
    ),
    bpf_link_update: libbpf.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
    bpf_iter_create: libbpf.func('int bpf_iter_create(int link_fd)'),
    bpf_raw_tracepoint_open: libbpf.func('int bpf_raw_tracepoint_open(const char *name, int prog_fd)'),
    bpf_map__set_initial_value: libbpf.func('int bpf_map__set_initial_value(bpf_map *map, const void *data, size_t size)'),
    bpf_map__value_size: libbpf.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
    bpf_tc_hook_create: libbpf.func('int bpf_tc_hook_create(bpf_tc_hook *hook)'),
    bpf_tc_attach: libbpf.func('int bpf_tc_attach(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
    bpf_tc_detach: libbpf.func('int bpf_tc_detach(const bpf_tc_hook *hook, const bpf_tc_opts *opts)'),
    bpf_tc_query: libbpf.func('int bpf_tc_query(const bpf_tc_hook *hook, _Inout_ bpf_tc_opts *opts)'),
    bpf_xdp_attach: libbpf.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const void *opts)'),
    bpf_xdp_detach: libbpf.func('int bpf_xdp_detach(int ifindex, uint32_t flags, const void *opts)'),
    bpf_prog_test_run_opts: libbpf.func(
      'int bpf_prog_test_run_opts(int prog_fd, _Inout_ bpf_test_run_opts *opts)',
    ),
    vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *args)'),
    close: libc.func('int close(int fd)'),
    socket: libc.func('int socket(int domain, int type, int protocol)'),
    getsockopt: libc.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)'),
    if_nametoindex: libc.func('unsigned int if_nametoindex(const char *name)'),
    geteuid: libc.func('unsigned int geteuid(void)'),
  };
  /** libbpf's last warning (the reason behind the failure that follows it). */
  const state = { lastMessage: null as string | null };
  const printBuf = Buffer.alloc(4096);
  const printCallback = koffi.register((level: number, fmt: string, args: unknown): number => {
    const n = fns.vsnprintf(printBuf, printBuf.length, fmt, args) as number;
    const text = printBuf
      .subarray(0, Math.max(0, Math.min(n, printBuf.length - 1)))
      .toString('utf8')
      .trimEnd();
    if (level === LIBBPF_WARN) {
      // The verifier log ends with a marker line; the reason is the line before it.
      if (!/^-- END|^\s*$/.test(text)) state.lastMessage = text.replace(/^libbpf: /, '');
      log.warn(text);
    } else if (level === LIBBPF_INFO) {
      log.debug(text);
    } else {
      log.trace(text);
    }
    return 0;
  }, koffi.pointer(PrintFn));
  fns.libbpf_set_print(printCallback);
  return { fns, state, OpenOpts, TcHook, TcOpts, BatchOpts, TestRunOpts, LinkCreateOpts };
}

const { fns, state, OpenOpts, TcHook, TcOpts, BatchOpts, TestRunOpts, LinkCreateOpts } = bind();


/** Takes libbpf's last warning (the reason behind the failure that follows it). */
function takeMessage(): string | null {
  const m = state.lastMessage;
  state.lastMessage = null;
  return m;
}

function check(op: string, ret: number): number {
  if (ret < 0) throw new BpfError(op, -ret, takeMessage());
  return ret;
}

function checkPtr<T>(op: string, ptr: T | null): T {
  if (ptr === null) throw new BpfError(op, koffi.errno(), takeMessage());
  return ptr;
}

/* Opaque handles: typed so they cannot be mixed up. */
export type ObjectHandle = { readonly __brand: 'bpf_object' };
export type ProgramHandle = { readonly __brand: 'bpf_program' };
export type MapHandle = { readonly __brand: 'bpf_map' };

export function openObject(path: string, pinRoot: string): ObjectHandle {
  state.lastMessage = null;
  const opts = {
    sz: koffi.sizeof(OpenOpts),
    object_name: null,
    relaxed_maps: false,
    pin_root_path: pinRoot,
    attach_prog_fd_removed: 0,
    kconfig: null,
    btf_custom_path: null,
    kernel_log_buf: null,
    kernel_log_size: 0,
    kernel_log_level: 0,
  };
  const obj = checkPtr(`bpf_object__open_file(${path})`, fns.bpf_object__open_file(path, opts)) as ObjectHandle;
  try {
    adoptPinnedSizes(obj, pinRoot);
  } catch (err) {
    fns.bpf_object__close(obj);
    throw err;
  }
  return obj;
}

/**
 * A map the loader sized (conntrack, to the node's memory) is pinned with that size, which every
 * other object sharing it must declare too, or libbpf refuses to reuse the pin: each map of the
 * object that is pinned already takes the pinned map's max_entries.
 */
function adoptPinnedSizes(obj: ObjectHandle, pinRoot: string): void {
  for (let map = fns.bpf_object__next_map(obj, null) as MapHandle | null; map !== null; map = fns.bpf_object__next_map(obj, map) as MapHandle | null) {
    const name = fns.bpf_map__name(map) as string;
    if (name.includes('.')) continue; // <obj>.rodata, <obj>.bss: the object's own, never pinned
    const pinned = pinnedMaxEntries(`${pinRoot}/${name}`);
    if (pinned !== null && pinned !== (fns.bpf_map__max_entries(map) as number)) mapSetMaxEntries(map, pinned, name);
  }
}

/**
 * The maps an object file declares (its own `.rodata`/`.bss` left out) with the sizes compiled in,
 * read without pinning, sizing or loading anything.
 */
export function declaredMaps(path: string): Array<{ name: string; maxEntries: number }> {
  state.lastMessage = null;
  const opts = {
    sz: koffi.sizeof(OpenOpts), object_name: null, relaxed_maps: false, pin_root_path: null, attach_prog_fd_removed: 0,
    kconfig: null, btf_custom_path: null, kernel_log_buf: null, kernel_log_size: 0, kernel_log_level: 0,
  };
  const obj = checkPtr(`bpf_object__open_file(${path})`, fns.bpf_object__open_file(path, opts)) as ObjectHandle;
  try {
    const out: Array<{ name: string; maxEntries: number }> = [];
    for (let map = fns.bpf_object__next_map(obj, null) as MapHandle | null; map !== null; map = fns.bpf_object__next_map(obj, map) as MapHandle | null) {
      const name = fns.bpf_map__name(map) as string;
      if (!name.includes('.')) out.push({ name, maxEntries: fns.bpf_map__max_entries(map) as number });
    }
    return out;
  } finally {
    fns.bpf_object__close(obj);
  }
}

/** The max_entries of the map pinned at `path`, or null when nothing (usable) is pinned there. */
export function pinnedMaxEntries(path: string): number | null {
  const fd = fns.bpf_obj_get(path) as number;
  if (fd < 0) return null;
  try {
    return mapInfo(fd, path).maxEntries;
  } finally {
    fns.close(fd);
  }
}

export function mapMaxEntries(map: MapHandle): number {
  return fns.bpf_map__max_entries(map) as number;
}

/** Sizes a map before load (the object must be opened, not loaded). */
export function mapSetMaxEntries(map: MapHandle, maxEntries: number, what: string): void {
  check(`bpf_map__set_max_entries(${what}, ${maxEntries})`, fns.bpf_map__set_max_entries(map, maxEntries) as number);
}

export function loadObject(obj: ObjectHandle, name: string): void {
  state.lastMessage = null;
  check(`bpf_object__load(${name})`, fns.bpf_object__load(obj) as number);
}

export function closeObject(obj: ObjectHandle): void {
  fns.bpf_object__close(obj);
}

export function findProgram(obj: ObjectHandle, name: string): ProgramHandle {
  return checkPtr(`find program ${name}`, fns.bpf_object__find_program_by_name(obj, name)) as ProgramHandle;
}

export function programFd(prog: ProgramHandle, name: string): number {
  return check(`bpf_program__fd(${name})`, fns.bpf_program__fd(prog) as number);
}

export function findMap(obj: ObjectHandle, name: string): MapHandle {
  return checkPtr(`find map ${name}`, fns.bpf_object__find_map_by_name(obj, name)) as MapHandle;
}

export function mapFd(map: MapHandle, name: string): number {
  return check(`bpf_map__fd(${name})`, fns.bpf_map__fd(map) as number);
}

export function mapUpdate(fd: number, key: Buffer, value: Buffer, flags: number, what: string): void {
  check(`bpf_map_update_elem(${what})`, fns.bpf_map_update_elem(fd, key, value, flags) as number);
}

/** Returns false when the key is absent (ENOENT); throws on any other failure. */
export function mapLookup(fd: number, key: Buffer, value: Buffer, what: string): boolean {
  const ret = fns.bpf_map_lookup_elem(fd, key, value) as number;
  if (ret === -2) return false;
  check(`bpf_map_lookup_elem(${what})`, ret);
  return true;
}

/** Returns false when the key was absent. */
export function mapDelete(fd: number, key: Buffer, what: string): boolean {
  const ret = fns.bpf_map_delete_elem(fd, key) as number;
  if (ret === -2) return false;
  check(`bpf_map_delete_elem(${what})`, ret);
  return true;
}

/** Writes the key after `key` (or the first, for null) into `next`; false at the end. */
export function mapNextKey(fd: number, key: Buffer | null, next: Buffer, what: string): boolean {
  const ret = fns.bpf_map_get_next_key(fd, key, next) as number;
  if (ret === -2) return false;
  check(`bpf_map_get_next_key(${what})`, ret);
  return true;
}

/** Updates `count` entries packed back to back in `keys` and `values`; one syscall. */
export function mapUpdateBatch(fd: number, keys: Buffer, values: Buffer, count: number, what: string): void {
  const n = [count];
  const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
  check(`bpf_map_update_batch(${what}, ${count})`, fns.bpf_map_update_batch(fd, keys, values, n, opts) as number);
}

/**
 * Reads up to `max` entries starting after `inBatch` (null: from the start) into `keys`/`values`.
 * Returns how many were read and whether the map is exhausted.
 */
export function mapLookupBatch(
  fd: number,
  inBatch: Buffer | null,
  outBatch: Buffer,
  keys: Buffer,
  values: Buffer,
  max: number,
  what: string,
): { count: number; done: boolean } {
  const n = [max];
  const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
  const ret = fns.bpf_map_lookup_batch(fd, inBatch, outBatch, keys, values, n, opts) as number;
  if (ret === -2) return { count: n[0] ?? 0, done: true };
  check(`bpf_map_lookup_batch(${what})`, ret);
  return { count: n[0] ?? 0, done: false };
}

/** A new map outside any object, not pinned (tests make maps of earlier layouts with it). */
export function mapCreate(type: number, name: string, keySize: number, valueSize: number, maxEntries: number): number {
  return check(`bpf_map_create(${name})`, fns.bpf_map_create(type, name, keySize, valueSize, maxEntries, null) as number);
}

export function objGet(path: string): number {
  state.lastMessage = null;
  return check(`bpf_obj_get(${path})`, fns.bpf_obj_get(path) as number);
}

export function objPin(fd: number, path: string): void {
  check(`bpf_obj_pin(${path})`, fns.bpf_obj_pin(fd, path) as number);
}

export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

export function mapInfo(fd: number, what: string): MapInfo {
  // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags (u32 each), name[16]
  const info = Buffer.alloc(128);
  const len = [info.length];
  check(`bpf_obj_get_info_by_fd(${what})`, fns.bpf_obj_get_info_by_fd(fd, info, len) as number);
  const nameBytes = info.subarray(24, 40);
  const end = nameBytes.indexOf(0);
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: nameBytes.subarray(0, end < 0 ? 16 : end).toString('latin1'),
  };
}

/** The kernel's id of a loaded program (struct bpf_prog_info: type, id, ...). */
export function programId(fd: number, what: string): number {
  const info = Buffer.alloc(256);
  const len = [info.length];
  check(`bpf_obj_get_info_by_fd(${what})`, fns.bpf_obj_get_info_by_fd(fd, info, len) as number);
  return info.readUInt32LE(4);
}

/** Attach types of enum bpf_attach_type that libbpf 1.1's headers predate. */
export const BPF_TCX_INGRESS = 46;
export const BPF_TCX_EGRESS = 47;

export function linkCreate(progFd: number, ifindex: number, attachType: number, what: string): number {
  state.lastMessage = null;
  return check(`bpf_link_create(${what})`, fns.bpf_link_create(progFd, ifindex, attachType, null) as number);
}

export function linkUpdate(linkFd: number, progFd: number, what: string): void {
  check(`bpf_link_update(${what})`, fns.bpf_link_update(linkFd, progFd, null) as number);
}

/** enum bpf_attach_type: the cgroup socket hooks of socket LB, and socket iterators. */
export const BPF_CGROUP_INET4_CONNECT = 10;
export const BPF_CGROUP_INET6_CONNECT = 11;
export const BPF_CGROUP_UDP4_SENDMSG = 14;
export const BPF_CGROUP_UDP6_SENDMSG = 15;
export const BPF_CGROUP_UDP4_RECVMSG = 19;
export const BPF_CGROUP_UDP6_RECVMSG = 20;
export const BPF_TRACE_ITER = 28;
export const BPF_CGROUP_INET4_GETPEERNAME = 29;
export const BPF_CGROUP_INET6_GETPEERNAME = 30;

export interface LinkInfo {
  /** enum bpf_link_type (BPF_LINK_TYPE_CGROUP = 3). */
  type: number;
  id: number;
  progId: number;
  /** For cgroup links: the cgroup's id (its directory's inode number); 0 once the cgroup is gone. */
  cgroupId: bigint;
  attachType: number;
}

export const BPF_LINK_TYPE_CGROUP = 3;

export function linkInfo(fd: number, what: string): LinkInfo {
  // struct bpf_link_info: type, id, prog_id (u32), then a union aligned to 8: cgroup { u64 cgroup_id; u32 attach_type }
  const info = Buffer.alloc(128);
  const len = [info.length];
  check(`bpf_obj_get_info_by_fd(${what})`, fns.bpf_obj_get_info_by_fd(fd, info, len) as number);
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    progId: info.readUInt32LE(8),
    cgroupId: info.readBigUInt64LE(16),
    attachType: info.readUInt32LE(24),
  };
}

/** Attaches a map-element iterator program (SEC("iter/bpf_map_elem")) to one map; returns the link fd. */
export function linkCreateMapIter(progFd: number, mapFd: number, what: string): number {
  state.lastMessage = null;
  // union bpf_iter_link_info { struct { __u32 map_fd; } map; ... }: the map is all we pass.
  const info = koffi.alloc('uint8_t', 8);
  try {
    const view = Buffer.from(koffi.view(info, 8)); // shares the allocation
    view.fill(0);
    view.writeUInt32LE(mapFd, 0);
    const opts = { sz: koffi.sizeof(LinkCreateOpts), flags: 0, iter_info: info, iter_info_len: 8, target_btf_id: 0 };
    return check(`bpf_link_create(${what})`, fns.bpf_link_create_iter(progFd, 0, BPF_TRACE_ITER, opts) as number);
  } finally {
    koffi.free(info);
  }
}

/**
 * Attaches a tp_btf program (its tracepoint is in its BTF attach id, set by libbpf at load);
 * returns the fd that keeps it attached until closed.
 */
export function rawTracepointOpen(progFd: number, what: string): number {
  state.lastMessage = null;
  return check(`bpf_raw_tracepoint_open(${what})`, fns.bpf_raw_tracepoint_open(null, progFd) as number);
}

/** Creates an iterator from an iterator link: reading the returned fd runs the program. */
export function iterCreate(linkFd: number, what: string): number {
  state.lastMessage = null;
  return check(`bpf_iter_create(${what})`, fns.bpf_iter_create(linkFd) as number);
}

/**
 * Sets a map's initial contents before load: for `.rodata`, the `const volatile` settings of an
 * object. `data` must be the map's whole value.
 */
export function mapSetInitialValue(map: MapHandle, data: Buffer, what: string): void {
  const size = fns.bpf_map__value_size(map) as number;
  if (size !== data.length) {
    throw new BpfError(`bpf_map__set_initial_value(${what})`, 22, `${what} is ${size} bytes, the settings ${data.length}: object and loader disagree`);
  }
  check(`bpf_map__set_initial_value(${what})`, fns.bpf_map__set_initial_value(map, data, data.length) as number);
}

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;

/** The cookie of this process's network namespace (SO_NETNS_COOKIE, kernel >= 5.14). */
export function netnsCookie(): bigint {
  const fd = fns.socket(AF_INET, SOCK_DGRAM, 0) as number;
  if (fd < 0) throw new BpfError('socket(AF_INET, SOCK_DGRAM)', koffi.errno(), null);
  try {
    const buf = Buffer.alloc(8);
    const len = [8];
    if ((fns.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, buf, len) as number) < 0) {
      throw new BpfError('getsockopt(SO_NETNS_COOKIE)', koffi.errno(), null);
    }
    return buf.readBigUInt64LE(0);
  } finally {
    fns.close(fd);
  }
}

export const BPF_TC_INGRESS = 1;
export const BPF_TC_EGRESS = 2;
const BPF_TC_F_REPLACE = 1;

export function tcHookCreate(ifindex: number, attachPoint: number, what: string): void {
  const hook = { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 };
  const ret = fns.bpf_tc_hook_create(hook) as number;
  if (ret === -17) return; // EEXIST: the clsact qdisc is there already (maybe with others' filters)
  check(`bpf_tc_hook_create(${what})`, ret);
}

export function tcAttach(ifindex: number, attachPoint: number, progFd: number, handle: number, priority: number, what: string): void {
  const hook = { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 };
  const opts = { sz: koffi.sizeof(TcOpts), prog_fd: progFd, flags: BPF_TC_F_REPLACE, prog_id: 0, handle, priority };
  check(`bpf_tc_attach(${what})`, fns.bpf_tc_attach(hook, opts) as number);
}

/** Detaches only vipr's filter (handle + priority); other users' filters and the qdisc stay. */
export function tcDetach(ifindex: number, attachPoint: number, handle: number, priority: number, what: string): boolean {
  const hook = { sz: koffi.sizeof(TcHook), ifindex, attach_point: attachPoint, parent: 0 };
  const opts = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle, priority };
  const ret = fns.bpf_tc_detach(hook, opts) as number;
  if (ret === -2 || ret === -19 || ret === -22) return false; // no such filter, device or qdisc
  check(`bpf_tc_detach(${what})`, ret);
  return true;
}

export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;

/** Attaches (or replaces) the interface's XDP program in the given mode (netlink, outlives us). */
export function xdpAttach(ifindex: number, progFd: number, flags: number, what: string): void {
  state.lastMessage = null;
  check(`bpf_xdp_attach(${what})`, fns.bpf_xdp_attach(ifindex, progFd, flags, null) as number);
}

/** Removes the interface's XDP program in that mode; false when there was none. */
export function xdpDetach(ifindex: number, flags: number, what: string): boolean {
  const ret = fns.bpf_xdp_detach(ifindex, flags, null) as number;
  if (ret === -2 || ret === -19) return false;
  check(`bpf_xdp_detach(${what})`, ret);
  return true;
}

export interface TestRunResult {
  retval: number;
  /** The packet as the program left it (for XDP with `xdpMeta`, without its metadata). */
  data: Buffer;
  durationNs: number;
  /** XDP with `xdpMeta`: the metadata the program put in front of the packet (bpf_xdp_adjust_meta); else empty. */
  meta: Buffer;
}

/** struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex. */
const XDP_MD_BYTES = 24;

/**
 * Runs a program over one packet (BPF_PROG_TEST_RUN); the packet may grow by up to 256 bytes.
 * `xdpMeta` (XDP programs): pass an xdp_md in and out, so that the metadata the program leaves in
 * front of the packet is told apart from it (the kernel returns both as one buffer).
 */
export function progTestRun(progFd: number, packet: Buffer, repeat = 1, opt: { xdpMeta?: boolean } = {}): TestRunResult {
  const outCap = packet.length + 256;
  const inPtr = koffi.alloc('uint8_t', Math.max(packet.length, 1));
  const outPtr = koffi.alloc('uint8_t', outCap);
  const ctxIn = opt.xdpMeta ? koffi.alloc('uint8_t', XDP_MD_BYTES) : null;
  const ctxOut = opt.xdpMeta ? koffi.alloc('uint8_t', XDP_MD_BYTES) : null;
  try {
    Buffer.from(koffi.view(inPtr, packet.length)).set(packet);
    if (ctxIn !== null && ctxOut !== null) {
      // No metadata in, data_end = the packet's length (what the kernel requires of a ctx_in).
      const md = Buffer.alloc(XDP_MD_BYTES);
      md.writeUInt32LE(packet.length, 4);
      Buffer.from(koffi.view(ctxIn, XDP_MD_BYTES)).set(md);
      Buffer.from(koffi.view(ctxOut, XDP_MD_BYTES)).fill(0);
    }
    const opts = {
      sz: koffi.sizeof(TestRunOpts),
      data_in: inPtr,
      data_out: outPtr,
      data_size_in: packet.length,
      data_size_out: outCap,
      ctx_in: ctxIn,
      ctx_out: ctxOut,
      ctx_size_in: ctxIn !== null ? XDP_MD_BYTES : 0,
      ctx_size_out: ctxOut !== null ? XDP_MD_BYTES : 0,
      retval: 0,
      repeat,
      duration: 0,
      flags: 0,
      cpu: 0,
      batch_size: 0,
    };
    check('bpf_prog_test_run_opts', fns.bpf_prog_test_run_opts(progFd, opts) as number);
    const out = Buffer.from(Buffer.from(koffi.view(outPtr, opts.data_size_out)));
    // ctx_out's data: where the packet starts in what came out, i.e. the metadata's length.
    const metaLen = ctxOut !== null ? Buffer.from(koffi.view(ctxOut, XDP_MD_BYTES)).readUInt32LE(0) : 0;
    return { retval: opts.retval, data: out.subarray(metaLen), durationNs: opts.duration, meta: out.subarray(0, metaLen) };
  } finally {
    koffi.free(inPtr);
    koffi.free(outPtr);
    if (ctxIn !== null) koffi.free(ctxIn);
    if (ctxOut !== null) koffi.free(ctxOut);
  }
}

export function numPossibleCpus(): number {
  return check('libbpf_num_possible_cpus', fns.libbpf_num_possible_cpus() as number);
}

export function closeFd(fd: number): void {
  fns.close(fd);
}

/** 0 when there is no such interface (in this network namespace). */
export function ifNameToIndex(name: string): number {
  return fns.if_nametoindex(name) as number;
}

export function effectiveUid(): number {
  return fns.geteuid() as number;
}
