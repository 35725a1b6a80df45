/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef __VIPR_STATS_H
#define __VIPR_STATS_H

#include "maps.h"

/* Counts one packet of @len bytes under @stat. Per-CPU: no atomics on the fast path. */
static __always_inline void stats_count(__u32 stat, __u32 len)
{
	struct vipr_stat_value *v = bpf_map_lookup_elem(&vipr_stats_v2, &stat);

	if (v) {
		v->packets++;
		v->bytes += len;
	}
}

#endif /* __VIPR_STATS_H */
