/*
 * The two files between the bench and its program worker (program-worker.ts, run in a node's
 * namespace): the request the bench writes and the result the worker writes back. Both are read
 * from disk through src/json-file.ts, so a truncated or foreign file is one line naming it.
 * The schemas are the types: nothing else describes these shapes.
 */
import { z } from 'zod';
import type { JsonRecordKind } from '../json-file.js';
import { DATAPLANE_MODES, type DataplaneMode } from './plan.js';

const ProgramRequestSchema = z.object({
  mode: z.string().refine((m): m is DataplaneMode => (DATAPLANE_MODES as readonly string[]).includes(m), {
    message: `expected one of ${DATAPLANE_MODES.join(', ')}`,
  }),
  manifestsDir: z.string().min(1),
  pinDir: z.string().min(1),
  nodeName: z.string().min(1),
  /** `namespace/name` of the Service whose endpoints change for sync_one. */
  changeService: z.string().min(1),
  repeats: z.number().int().nonnegative(),
  /** VIPs of the measured Services, by placement, to locate in KUBE-SERVICES. */
  measuredVips: z.record(z.string()),
  resultFile: z.string().min(1),
});
export type ProgramRequest = z.infer<typeof ProgramRequestSchema>;

const ms = z.number().nonnegative();

const ProgramResultSchema = z.object({
  services: z.number().int().nonnegative(),
  syncAllMs: ms,
  syncOneMs: z.array(ms),
  /** BPF only: the part of each sync spent in map calls (bpf(2) through libbpf), same order. */
  mapAllMs: ms.nullable(),
  mapOneMs: z.array(ms).nullable(),
  /** iptables modes: 1-based position of each measured Service's TCP rule among KUBE-SERVICES' service rules. */
  positions: z.record(z.object({ position: z.number().int().positive(), of: z.number().int().positive() })).nullable(),
});
export type ProgramResult = z.infer<typeof ProgramResultSchema>;

export const PROGRAM_REQUEST: JsonRecordKind<ProgramRequest> = {
  what: 'bench program request',
  schema: ProgramRequestSchema,
  fix: 'it is written by vipr bench for its worker: run the worker only from vipr bench',
};

export const PROGRAM_RESULT: JsonRecordKind<ProgramResult> = {
  what: 'bench program result',
  schema: ProgramResultSchema,
  fix: 'the program worker wrote something else: rebuild (make build) and run vipr bench again',
};
