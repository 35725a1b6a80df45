/*
 * Service and backend ids of the BPF maps. Ids are what the datapath's conntrack, affinity and
 * slot entries refer to, so an id never changes while its service or backend lives, and a
 * restarted agent takes them back from the pinned maps (reset) instead of numbering anew.
 */
import { BpfError } from '../../errors.js';

/** Ids from 1 up, reusing freed ones (most recently freed first: O(1) both ways). */
export class IdAllocator {
  private next = 1;
  private free: number[] = [];
  constructor(private readonly max: number, private readonly what: string) {}

  reset(used: Iterable<number>): void {
    const set = new Set(used);
    let max = 0;
    for (const id of set) if (id > max) max = id;
    this.next = max + 1;
    this.free = [];
    for (let i = this.next - 1; i >= 1; i--) if (!set.has(i)) this.free.push(i);
  }

  take(): number {
    const id = this.free.pop() ?? this.next++;
    if (id > this.max) throw new BpfError(`allocate ${this.what} id`, 28, null, { hint: `more than ${this.max} in use` });
    return id;
  }

  release(id: number): void {
    this.free.push(id);
  }
}

