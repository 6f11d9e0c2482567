/* load_hf.c: a model from a Hugging Face config.json and safetensors shards. Each file tensor maps onto one
 * entry of the model's tensor table by name, with its exact shape; anything else in the files is an error
 * except buffers that carry no weights and a stored copy of a tied head. */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "model/model.h"
#include "wl_io.h"

#define NAME_FMT "%.200s"

static int starts_with(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

/* GPT-2's causal mask buffers: [transformer.]h.<layer>.attn.bias and .attn.masked_bias. */
static int gpt2_mask_buffer(const char *name) {
    if (starts_with(name, "transformer.")) name += strlen("transformer.");
    if (!starts_with(name, "h.")) return 0;
    name += 2;
    if (*name < '0' || *name > '9') return 0;
    while (*name >= '0' && *name <= '9') name++;
    return strcmp(name, ".attn.bias") == 0 || strcmp(name, ".attn.masked_bias") == 0;
}

/* File tensors that are not weights of the model and may be skipped: how many values such a tensor may hold at most
 * (a stored copy of a tied head: the embedding's; RoPE's inv_freq: one per rotated pair of a head; GPT-2's causal
 * mask: n_positions^2, its masked_bias: one), or 0 when the name is no such tensor. */
static uint64_t ignorable(const wl_config *c, const char *name) {
    if (c->tied_embeddings && strcmp(name, "lm_head.weight") == 0) return (uint64_t)c->vocab_size * (uint64_t)c->dim;
    if (c->arch == WL_ARCH_GPT2) {
        if (!gpt2_mask_buffer(name)) return 0;
        return ends_with(name, ".masked_bias") ? 1 : (uint64_t)c->max_seq_len * (uint64_t)c->max_seq_len;
    }
    return ends_with(name, "rotary_emb.inv_freq") ? (uint64_t)c->head_dim / 2 : 0;
}

/* Index of the model tensor a file name refers to, or -1. GPT-2 files name tensors with or without the
 * "transformer." prefix (GPT2LMHeadModel vs GPT2Model checkpoints); the table uses the prefixed form. */
static int resolve(const wl_model *m, const char *name) {
    int index = -1;
    if (wl_model_find_tensor(m, name, &index) == WL_OK) return index;
    if (wl_model_config(m)->arch == WL_ARCH_GPT2 && !starts_with(name, "transformer.")) {
        char full[256];
        int n = snprintf(full, sizeof full, "transformer.%s", name);
        if (n > 0 && (size_t)n < sizeof full && wl_model_find_tensor(m, full, &index) == WL_OK) return index;
    }
    return -1;
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

wl_status wl_model_match_tensor(const wl_model *model, const char *name, int dtype, int ndim, const int64_t *shape,
                                int *index) {
    if (!model || !name || !index || (ndim > 0 && !shape))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_match_tensor: NULL argument");
    if (ndim < 0 || ndim > WL_ST_MAX_DIMS)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "safetensors: tensor \"" NAME_FMT "\" has an invalid shape", name);
    const wl_config *c = wl_model_config(model);
    *index = resolve(model, name);
    if (*index < 0) {
        uint64_t most = ignorable(c, name);
        if (most) {
            uint64_t numel = 1;
            for (int d = 0; d < ndim; d++) { /* saturating: a hostile shape must not wrap to a small count */
                uint64_t k = shape[d] < 0 ? UINT64_MAX : (uint64_t)shape[d];
                numel = k && numel > UINT64_MAX / k ? UINT64_MAX : numel * k;
            }
            if (numel <= most) return WL_OK;
            return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: buffer \"" NAME_FMT "\" declares %llu values; this model's "
                           "config allows it at most %llu", name, (unsigned long long)numel, (unsigned long long)most);
        }
        return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\" is not part of this %s model", name,
                       c->arch == WL_ARCH_GPT2 ? "GPT-2" : "Llama-family");
    }
    wl_tensor_info info;
    wl_status status = wl_model_tensor(model, *index, &info);
    if (status != WL_OK) return status;
    if (dtype != WL_DTYPE_F32 && dtype != WL_DTYPE_F16 && dtype != WL_DTYPE_BF16 && dtype != WL_DTYPE_F64)
        return wl_fail(WL_STATUS_UNSUPPORTED, "safetensors: tensor \"" NAME_FMT "\" has dtype %s; weights must be F32, "
                                              "F16, BF16 or F64",
                       name, wl_dtype_name(dtype));
    int same = ndim == info.ndim;
    for (int d = 0; same && d < ndim; d++) same = shape[d] == info.shape[d];
    if (!same) {
        char got[160], want[64];
        fmt_shape(got, sizeof got, shape, ndim > WL_ST_MAX_DIMS ? WL_ST_MAX_DIMS : ndim);
        fmt_shape(want, sizeof want, info.shape, info.ndim);
        return wl_fail(WL_STATUS_SHAPE_MISMATCH, "safetensors: tensor \"" NAME_FMT "\" has shape %s but the model expects %s",
                       name, got, want);
    }
    return WL_OK;
}

wl_status wl_model_plan_shard(const wl_model *model, const wl_safetensors *st, uint8_t *seen, int *index) {
    if (!model || !st || !seen || (!index && st->n_tensors))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_plan_shard: NULL argument");
    for (int i = 0; i < st->n_tensors; i++) {
        const wl_st_tensor *t = &st->tensors[i];
        wl_status status = wl_model_match_tensor(model, t->name, t->dtype, t->ndim, t->shape, &index[i]);
        if (status != WL_OK) return status;
        if (index[i] < 0) continue;
        if (seen[index[i]]) {
            wl_tensor_info info;
            status = wl_model_tensor(model, index[i], &info);
            if (status != WL_OK) return status;
            return wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"%s\" is stored more than once (\"" NAME_FMT "\")",
                           info.name, t->name);
        }
        seen[index[i]] = 1;
    }
    return WL_OK;
}

wl_status wl_model_check_loaded(const wl_model *model, const uint8_t *seen) {
    if (!model || !seen) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_check_loaded: NULL argument");
    for (int i = 0; i < wl_model_n_tensors(model); i++) {
        if (seen[i]) continue;
        wl_tensor_info info;
        wl_status status = wl_model_tensor(model, i, &info);
        if (status != WL_OK) return status;
        return wl_fail(WL_STATUS_NOT_FOUND, "safetensors: model tensor \"%s\" is missing from the weights", info.name);
    }
    return WL_OK;
}

wl_status wl_model_fill_from_safetensors(wl_model *model, const wl_safetensors *st, const uint8_t *buf, size_t len,
                                         uint8_t *seen) {
    if (!model || !st || (!buf && len))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_fill_from_safetensors: NULL argument");
    /* Without the caller's flags, still catch one tensor stored under two names (GPT-2 prefixes). */
    uint8_t *local = NULL;
    if (!seen) {
        local = wl_alloc((size_t)wl_model_n_tensors(model), "tensor flags");
        if (!local) return WL_STATUS_OUT_OF_MEMORY;
        seen = local;
    }
    int *index = wl_alloc_array((size_t)(st->n_tensors ? st->n_tensors : 1), sizeof *index, "load plan");
    wl_status status = index ? wl_model_plan_shard(model, st, seen, index) : WL_STATUS_OUT_OF_MEMORY;
    for (int i = 0; i < st->n_tensors && status == WL_OK; i++) {
        const wl_st_tensor *t = &st->tensors[i];
        if (index[i] < 0) continue;
        /* st may come from wl_st_parse_header: make sure this buffer really holds the bytes. */
        if (st->data_start > (uint64_t)len || t->end > (uint64_t)len - st->data_start) {
            status = wl_fail(WL_STATUS_BAD_FORMAT, "safetensors: tensor \"" NAME_FMT "\" ends at byte %llu, beyond the %zu-byte buffer",
                             t->name, (unsigned long long)(st->data_start + t->end), len);
            break;
        }
        status = wl_model_write_tensor(model, index[i], t->dtype, 0, t->numel, buf + st->data_start + t->begin);
    }
    wl_free(index);
    wl_free(local);
    return status;
}

/* Values a set of safetensors files for this config may hold beyond its weights: a stored copy of a tied head and,
 * per layer, the buffers that carry no weights (ignorable's bounds; one more inv_freq for the model). */
static uint64_t buffer_values(const wl_config *c) {
    uint64_t L = (uint64_t)c->n_layers, n = 0;
    if (c->tied_embeddings) n += ignorable(c, "lm_head.weight");
    if (c->arch == WL_ARCH_GPT2) n += L * (ignorable(c, "h.0.attn.bias") + ignorable(c, "h.0.attn.masked_bias"));
    else n += (L + 1) * ignorable(c, "rotary_emb.inv_freq");
    return n;
}

wl_status wl_config_check_file_values(const wl_config *cfg, uint64_t values, int n_shards) {
    if (!cfg) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_check_file_values: NULL argument");
    uint64_t need = wl_config_n_params(cfg);
    uint64_t most = need + buffer_values(cfg);
    const char *files = n_shards > 1 ? "safetensors files" : "safetensors file";
    const char *s = n_shards > 1 ? "" : "s";
    /* Small shortfalls go on to name the first missing tensor; only a gross mismatch stops here. */
    if (values < UINT64_MAX / 2 && need > 2 * values + 65536)
        return wl_fail(WL_STATUS_NOT_FOUND, "config.json describes %llu parameters but the %s hold%s only %llu values",
                       (unsigned long long)need, files, s, (unsigned long long)values);
    /* Likewise small excesses go on to name the tensor stored twice or the buffer too large (wl_model_plan_shard). */
    if (values > 2 * most + 65536)
        return wl_fail(WL_STATUS_BAD_FORMAT, "the %s declare%s %llu values, far more than the %llu that config.json's model "
                       "and its buffers can use (%llu parameters)",
                       files, s, (unsigned long long)values, (unsigned long long)most, (unsigned long long)need);
    return WL_OK;
}

/* "shard s of n: <reason>" for a failure of shard s (0-based) when there are several. */
static wl_status in_shard(wl_status status, int s, int n_shards) {
    if (status == WL_OK || n_shards < 2) return status;
    char why[400];
    snprintf(why, sizeof why, "%s", wl_last_error());
    return wl_fail(status, "shard %d of %d: %s", s + 1, n_shards, why);
}

wl_status wl_config_check_shards(const wl_config *cfg, const wl_safetensors *const *shards, int n_shards) {
    if (!cfg || !shards || n_shards < 1) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_check_shards: no shards");
    uint64_t values = 0;
    int most_tensors = 1;
    for (int s = 0; s < n_shards; s++) {
        if (!shards[s]) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_check_shards: shard %d is NULL", s + 1);
        for (int i = 0; i < shards[s]->n_tensors; i++) {
            uint64_t k = shards[s]->tensors[i].numel;
            values = values > UINT64_MAX - k ? UINT64_MAX : values + k;
        }
        if (shards[s]->n_tensors > most_tensors) most_tensors = shards[s]->n_tensors;
    }
    /* a gross mismatch first, before even the table is built */
    wl_status status = wl_config_check_file_values(cfg, values, n_shards);
    if (status != WL_OK) return status;
    wl_model *layout = NULL;
    status = wl_model_create_layout(cfg, &layout);
    if (status != WL_OK) return status;
    uint8_t *seen = wl_alloc((size_t)wl_model_n_tensors(layout), "tensor flags");
    int *index = wl_alloc_array((size_t)most_tensors, sizeof *index, "load plan");
    if (!seen || !index) status = WL_STATUS_OUT_OF_MEMORY;
    else memset(seen, 0, (size_t)wl_model_n_tensors(layout));
    for (int s = 0; s < n_shards && status == WL_OK; s++)
        status = in_shard(wl_model_plan_shard(layout, shards[s], seen, index), s, n_shards);
    if (status == WL_OK) status = wl_model_check_loaded(layout, seen);
    wl_free(index);
    wl_free(seen);
    wl_model_free(layout);
    return status;
}

wl_status wl_model_load_hf(const char *config_json, size_t config_len, const wl_buffer *shards, int n_shards,
                           wl_model **out) {
    if (!out) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_load_hf: out is NULL");
    *out = NULL;
    if (n_shards < 1 || !shards)
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_model_load_hf: at least one safetensors shard is needed");
    wl_config cfg;
    wl_status status = wl_config_from_hf_json(config_json, config_len, &cfg);
    if (status != WL_OK) return status;

    /* Parse and check every shard against the config before allocating the model, so files that do not belong
     * to it cannot make us allocate anything. */
    wl_safetensors **parsed = wl_alloc_array((size_t)n_shards, sizeof *parsed, "safetensors shards");
    if (!parsed) return WL_STATUS_OUT_OF_MEMORY;
    for (int s = 0; s < n_shards && status == WL_OK; s++)
        status = in_shard(wl_st_parse(shards[s].data, shards[s].len, &parsed[s]), s, n_shards);
    if (status == WL_OK) status = wl_config_check_shards(&cfg, (const wl_safetensors *const *)parsed, n_shards);

    wl_model *m = NULL;
    if (status == WL_OK) status = wl_model_create(&cfg, &m);
    int n = wl_model_n_tensors(m);
    uint8_t *seen = NULL;
    if (status == WL_OK) {
        seen = wl_alloc((size_t)n, "tensor flags");
        if (!seen) status = WL_STATUS_OUT_OF_MEMORY;
    }
    for (int s = 0; s < n_shards && status == WL_OK; s++)
        status = in_shard(wl_model_fill_from_safetensors(m, parsed[s], shards[s].data, shards[s].len, seen), s, n_shards);
    if (status == WL_OK) status = wl_model_check_loaded(m, seen);
    for (int s = 0; s < n_shards; s++) wl_st_free(parsed[s]);
    wl_free(parsed);
    wl_free(seen);
    if (status != WL_OK) {
        wl_model_free(m);
        return status;
    }
    *out = m;
    return WL_OK;
}
