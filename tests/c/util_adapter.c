/* util_adapter.c: wl_test_adapter (adapter_fixture.h). */
#include <stdlib.h>

#include "adapter_fixture.h"
#include "testutil.h"

wl_adapter *wl_test_adapter(wl_model *m, const wl_test_adapter_spec *spec) {
    const int L = wl_model_config(m)->n_layers, S = wl_model_n_slots(m);
    int *ranks = calloc((size_t)L * S, sizeof(int));
    float *alphas = calloc((size_t)L * S, sizeof(float));
    if (!ranks || !alphas) { /* a failure, but not a check of its own: callers' check counts stay those of their checks */
        wl_test_failures++;
        fprintf(stderr, "FAIL wl_test_adapter: out of memory for a rank table of %d modules\n", L * S);
        free(ranks);
        free(alphas);
        return NULL;
    }
    const int cycle = spec->rank_cycle > 0 ? spec->rank_cycle : 1;
    for (int l = spec->first_layer; l < L; l++) {
        for (int s = 0; s < S; s++) {
            const int i = l * S + s;
            ranks[i] = spec->slot_rank ? spec->slot_rank[s] : spec->rank + i % cycle;
            alphas[i] = ranks[i] ? spec->alpha + spec->alpha_per_rank * (float)ranks[i] : 0.0f;
        }
    }
    wl_lora_spec lora = {ranks, alphas, spec->rslora, spec->dora, spec->embed_rank, spec->embed_alpha,
                         spec->head_rank, spec->head_alpha};
    wl_adapter *a = NULL;
    CHECK_OK(wl_adapter_create(m, &lora, &a));
    free(ranks);
    free(alphas);
    if (a && spec->fill_scale > 0.0f) {
        size_t n;
        float *p = wl_adapter_params(a, &n);
        wl_test_fill(p, n, spec->fill_seed, spec->fill_scale);
    }
    return a;
}
