/* adapter_fixture.h: the adapters the C tests build on a model, described by a few numbers instead of a rank and
 * alpha table written out in each test. */
#ifndef WL_ADAPTER_FIXTURE_H
#define WL_ADAPTER_FIXTURE_H

#include <stdint.h>

#include "weblora.h"

typedef struct wl_test_adapter_spec {
    /* The rank of each linear module of layers first_layer.. (those before it have none): slot_rank[slot] when
     * given, else rank + i % rank_cycle for the i-th module in (layer, slot) order (rank_cycle 0 counts as 1). */
    const int *slot_rank;
    int rank, rank_cycle;
    int first_layer;
    /* each module's lora_alpha: alpha + alpha_per_rank * its rank (0 for a module without LoRA) */
    float alpha, alpha_per_rank;
    int rslora, dora;
    int embed_rank, head_rank; /* LoRA on the token embedding and the LM head, with their own alphas */
    float embed_alpha, head_alpha;
    /* fill_scale > 0: every adapter weight (B too, so the update is live) uniform in [-fill_scale, fill_scale) from
     * fill_seed (wl_test_fill); 0 leaves wl_adapter_create's initialisation (B = 0) */
    uint64_t fill_seed;
    float fill_scale;
} wl_test_adapter_spec;

/* The adapter, created on m (a failed creation counts as a failed check and gives NULL). Free with
 * wl_adapter_free. */
wl_adapter *wl_test_adapter(wl_model *m, const wl_test_adapter_spec *spec);

#endif
