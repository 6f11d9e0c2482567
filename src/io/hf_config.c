/* hf_config.c: a Hugging Face config.json (Llama, Mistral without sliding window, Qwen2, GPT-2) to a wl_config,
 * and a wl_config back to the config.json of a model exported in Hugging Face layout.
 * Defaults are those of the transformers config classes; options that would change the maths in ways the
 * model does not implement are refused by name rather than silently ignored. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "io/json.h"
#include "wl_io.h"

enum { FAM_LLAMA, FAM_MISTRAL, FAM_QWEN2, FAM_GPT2 };

static const struct {
    const char *architecture, *model_type;
    int family;
} FAMILIES[] = {
    {"LlamaForCausalLM", "llama", FAM_LLAMA},
    {"MistralForCausalLM", "mistral", FAM_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", FAM_QWEN2},
    {"GPT2LMHeadModel", "gpt2", FAM_GPT2},
};
#define N_FAMILIES (int)(sizeof FAMILIES / sizeof FAMILIES[0])

static int absent(const wl_json *v) { return !v || v->type == WL_JSON_NULL; }

/* An integer field in [lo, INT_MAX]; `def` when absent or null unless required. */
static wl_status get_int(const wl_json *root, const char *key, int required, int def, int lo, int *out) {
    const wl_json *v = wl_json_get(root, key);
    if (absent(v)) {
        if (required) return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" is missing", key);
        *out = def;
        return WL_OK;
    }
    if (v->type != WL_JSON_NUMBER || !v->is_int)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" must be an integer, got %s", key,
                       v->type == WL_JSON_NUMBER ? "a fraction" : wl_json_type_name(v->type));
    if (v->integer < lo || v->integer > INT_MAX)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" = %lld is out of range", key, (long long)v->integer);
    *out = (int)v->integer;
    return WL_OK;
}

/* A positive finite number that fits a float. */
static wl_status get_float(const wl_json *root, const char *key, float def, float *out) {
    const wl_json *v = wl_json_get(root, key);
    if (absent(v)) {
        *out = def;
        return WL_OK;
    }
    if (v->type != WL_JSON_NUMBER)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" must be a number, got %s", key,
                       wl_json_type_name(v->type));
    if (!(v->number > 0.0) || v->number > 1e30)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" = %g is out of range", key, v->number);
    *out = (float)v->number;
    return WL_OK;
}

static wl_status get_bool(const wl_json *root, const char *key, int def, int *out) {
    const wl_json *v = wl_json_get(root, key);
    if (absent(v)) {
        *out = def;
        return WL_OK;
    }
    if (v->type != WL_JSON_BOOL)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" must be true or false, got %s", key,
                       wl_json_type_name(v->type));
    *out = v->boolean;
    return WL_OK;
}

/* A string field compared against the allowed values; absent means `def`. */
static wl_status check_string(const wl_json *root, const char *key, const char *def, const char *const *allowed,
                              int n_allowed, const char *why) {
    const wl_json *v = wl_json_get(root, key);
    if (absent(v)) {
        for (int i = 0; i < n_allowed; i++)
            if (strcmp(def, allowed[i]) == 0) return WL_OK;
        return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: default \"%s\" = \"%s\" is not supported (%s)", key, def, why);
    }
    if (v->type != WL_JSON_STRING)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" must be a string, got %s", key,
                       wl_json_type_name(v->type));
    for (int i = 0; i < n_allowed; i++)
        if (wl_json_str_eq(v->str, v->str_len, allowed[i])) return WL_OK;
    return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: \"%s\" = \"%.64s\" is not supported (%s)", key, v->str, why);
}

/* A flag that must be false (or absent) because the model does not implement it. */
static wl_status refuse_true(const wl_json *root, const char *key, const char *why) {
    int on = 0;
    wl_status st = get_bool(root, key, 0, &on);
    if (st != WL_OK) return st;
    if (on) return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: \"%s\": true is not supported (%s)", key, why);
    return WL_OK;
}

/* bos_token_id / eos_token_id: an integer, a list (the first entry counts) or absent (-1). */
static wl_status get_token(const wl_json *root, const char *key, int *out) {
    const wl_json *v = wl_json_get(root, key);
    *out = -1;
    if (absent(v)) return WL_OK;
    if (v->type == WL_JSON_ARRAY) {
        if (v->n == 0) return WL_OK;
        v = &v->items[0];
    }
    if (v->type != WL_JSON_NUMBER || !v->is_int)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" must be an integer or a list of integers", key);
    if (v->integer < -1 || v->integer > INT_MAX)
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"%s\" = %lld is out of range", key, (long long)v->integer);
    *out = (int)v->integer;
    return WL_OK;
}

/* Which family the file describes: architectures[0] if present, else model_type. */
static wl_status find_family(const wl_json *root, int *family) {
    const wl_json *archs = wl_json_get(root, "architectures");
    const wl_json *type = wl_json_get(root, "model_type");
    const char *name = NULL;
    size_t len = 0;
    int by_arch = 0;
    if (!absent(archs)) {
        if (archs->type != WL_JSON_ARRAY || archs->n == 0 || archs->items[0].type != WL_JSON_STRING)
            return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"architectures\" must be a non-empty list of strings");
        name = archs->items[0].str;
        len = archs->items[0].str_len;
        by_arch = 1;
    } else if (!absent(type)) {
        if (type->type != WL_JSON_STRING)
            return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: \"model_type\" must be a string, got %s",
                           wl_json_type_name(type->type));
        name = type->str;
        len = type->str_len;
    } else {
        return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: neither \"architectures\" nor \"model_type\" is given");
    }
    for (int i = 0; i < N_FAMILIES; i++) {
        if (wl_json_str_eq(name, len, by_arch ? FAMILIES[i].architecture : FAMILIES[i].model_type)) {
            *family = FAMILIES[i].family;
            return WL_OK;
        }
    }
    return wl_fail(WL_STATUS_UNSUPPORTED,
                   "config.json: %s \"%.64s\" is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, "
                   "GPT2LMHeadModel)",
                   by_arch ? "architecture" : "model_type", name);
}

#define TRY(expr)                                                                                                  \
    do {                                                                                                           \
        wl_status try_st_ = (expr);                                                                                \
        if (try_st_ != WL_OK) return try_st_;                                                                      \
    } while (0)

static wl_status llama_family(const wl_json *root, int family, wl_config *c) {
    c->arch = WL_ARCH_LLAMA;
    TRY(get_int(root, "hidden_size", 1, 0, 1, &c->dim));
    TRY(get_int(root, "intermediate_size", 1, 0, 1, &c->hidden_dim));
    TRY(get_int(root, "num_hidden_layers", 1, 0, 1, &c->n_layers));
    TRY(get_int(root, "num_attention_heads", 1, 0, 1, &c->n_heads));
    TRY(get_int(root, "num_key_value_heads", 0, c->n_heads, 1, &c->n_kv_heads));
    TRY(get_int(root, "head_dim", 0, c->dim / c->n_heads, 1, &c->head_dim));
    TRY(get_int(root, "vocab_size", 1, 0, 1, &c->vocab_size));
    TRY(get_int(root, "max_position_embeddings", 0, 2048, 1, &c->max_seq_len));
    TRY(get_float(root, "rms_norm_eps", 1e-6f, &c->norm_eps));
    TRY(get_float(root, "rope_theta", 10000.0f, &c->rope_theta));
    /* LlamaConfig, MistralConfig and Qwen2Config all default to an untied head. */
    TRY(get_bool(root, "tie_word_embeddings", 0, &c->tied_embeddings));
    c->rope_layout = WL_ROPE_HALF;

    static const char *const silu[] = {"silu"};
    TRY(check_string(root, "hidden_act", "silu", silu, 1, "the Llama family here uses SiLU"));
    const wl_json *scaling = wl_json_get(root, "rope_scaling");
    if (!absent(scaling)) {
        const wl_json *t = wl_json_get(scaling, "rope_type");
        if (!t || t->type != WL_JSON_STRING) t = wl_json_get(scaling, "type");
        return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: rope_scaling of type \"%.32s\" is not supported",
                       t && t->type == WL_JSON_STRING ? t->str : "unknown");
    }
    TRY(refuse_true(root, "mlp_bias", "biases on the MLP projections"));

    if (family == FAM_QWEN2) {
        c->qkv_bias = 1; /* Qwen2 always has q/k/v biases and no o_proj bias */
        TRY(refuse_true(root, "use_sliding_window", "sliding-window attention"));
    } else {
        TRY(refuse_true(root, "attention_bias", "this Llama option adds a bias to o_proj too; only q/k/v biases "
                                                "are implemented"));
    }
    if (family == FAM_MISTRAL) {
        /* MistralConfig defaults sliding_window to 4096, so only an explicit null turns it off. */
        const wl_json *sw = wl_json_get(root, "sliding_window");
        if (!sw || sw->type != WL_JSON_NULL) {
            if (sw && sw->type == WL_JSON_NUMBER)
                return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: sliding_window = %g (sliding-window attention) is not supported",
                               sw->number);
            return wl_fail(WL_STATUS_UNSUPPORTED,
                           "config.json: Mistral sliding-window attention is not supported (sliding_window must be null)");
        }
    }
    return WL_OK;
}

static wl_status gpt2(const wl_json *root, wl_config *c) {
    c->arch = WL_ARCH_GPT2;
    TRY(get_int(root, "n_embd", 1, 0, 1, &c->dim));
    TRY(get_int(root, "n_layer", 1, 0, 1, &c->n_layers));
    TRY(get_int(root, "n_head", 1, 0, 1, &c->n_heads));
    TRY(get_int(root, "vocab_size", 1, 0, 1, &c->vocab_size));
    TRY(get_int(root, "n_positions", 0, 1024, 1, &c->max_seq_len));
    if (c->dim > INT_MAX / 4) return wl_fail(WL_STATUS_BAD_FORMAT, "config.json: n_embd = %d is out of range", c->dim);
    TRY(get_int(root, "n_inner", 0, 4 * c->dim, 1, &c->hidden_dim));
    TRY(get_float(root, "layer_norm_epsilon", 1e-5f, &c->norm_eps));
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    /* GPT2LMHeadModel ties lm_head to wte unless the config says otherwise; an untied GPT-2 is refused by
     * wl_config_validate rather than loaded with a head we would ignore. */
    TRY(get_bool(root, "tie_word_embeddings", 1, &c->tied_embeddings));
    c->rope_layout = WL_ROPE_HALF;
    c->rope_theta = 10000.0f; /* unused by GPT-2 */
    static const char *const acts[] = {"gelu_new", "gelu_pytorch_tanh"};
    TRY(check_string(root, "activation_function", "gelu_new", acts, 2, "GPT-2 here uses the tanh GELU"));
    TRY(refuse_true(root, "scale_attn_by_inverse_layer_idx", "per-layer attention scaling"));
    TRY(refuse_true(root, "reorder_and_upcast_attn", "reordered attention"));
    int scale = 1;
    TRY(get_bool(root, "scale_attn_weights", 1, &scale));
    if (!scale)
        return wl_fail(WL_STATUS_UNSUPPORTED, "config.json: \"scale_attn_weights\": false is not supported "
                                              "(attention is always scaled by 1/sqrt(head_dim))");
    return WL_OK;
}

wl_status wl_config_from_hf_json(const char *json, size_t len, wl_config *cfg) {
    if (!cfg || (!json && len)) return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_from_hf_json: NULL argument");
    wl_json_doc *doc = NULL;
    wl_status st = wl_json_parse(json, len, &doc);
    if (st != WL_OK) {
        char why[400];
        snprintf(why, sizeof why, "%s", wl_last_error());
        return wl_fail(st, "config.json: %s", why);
    }
    const wl_json *root = wl_json_root(doc);
    wl_config c;
    memset(&c, 0, sizeof c);
    int family = 0;
    if (root->type != WL_JSON_OBJECT)
        st = wl_fail(WL_STATUS_BAD_FORMAT, "config.json: the top level must be an object, got %s",
                     wl_json_type_name(root->type));
    if (st == WL_OK) st = find_family(root, &family);
    if (st == WL_OK) st = family == FAM_GPT2 ? gpt2(root, &c) : llama_family(root, family, &c);
    if (st == WL_OK) st = get_token(root, "bos_token_id", &c.bos_id);
    if (st == WL_OK) st = get_token(root, "eos_token_id", &c.eos_id);
    wl_json_free(doc);
    if (st == WL_OK) st = wl_config_validate(&c);
    if (st == WL_OK) *cfg = c;
    return st;
}

/* ---- writing ---- */

/* The shortest decimal that reads back as the same float (so JSON says 1e-05, not 9.99999974737875e-06). */
static void put_f32(wl_json_writer *w, float f) {
    char s[48];
    if (f == floorf(f) && fabsf(f) < 1e15f) { /* whole numbers as such: 10000, not 1e+04 */
        snprintf(s, sizeof s, "%.0f", (double)f);
    } else {
        for (int p = 1; p <= 9; p++) {
            snprintf(s, sizeof s, "%.*g", p, (double)f);
            if (strtof(s, NULL) == f) break;
        }
    }
    wl_jw_raw(w, s, strlen(s));
}

#define LIT(w, lit) wl_jw_raw((w), (lit), sizeof(lit) - 1)

/* "key":value, and the comma after it (the closing "torch_dtype" comes last). */
static void put_key(wl_json_writer *w, const char *key) {
    wl_jw_string(w, key, strlen(key));
    LIT(w, ":");
}
static void field_int(wl_json_writer *w, const char *key, int v) {
    put_key(w, key);
    wl_jw_int(w, v);
    LIT(w, ",");
}
static void field_f32(wl_json_writer *w, const char *key, float v) {
    put_key(w, key);
    put_f32(w, v);
    LIT(w, ",");
}
/* A token id, null when unknown (-1). */
static void field_token(wl_json_writer *w, const char *key, int id) {
    put_key(w, key);
    if (id >= 0) wl_jw_int(w, id);
    else LIT(w, "null");
    LIT(w, ",");
}

wl_status wl_config_to_hf_json(const wl_config *cfg, char *buf, size_t cap, size_t *len) {
    if (!cfg || !len || (!buf && cap))
        return wl_fail(WL_STATUS_INVALID_ARGUMENT, "wl_config_to_hf_json: NULL argument");
    wl_status st = wl_config_validate(cfg);
    if (st != WL_OK) return st;
    const wl_config *c = cfg;
    wl_json_writer jw, *w = &jw;
    wl_jw_init(w);
    if (c->arch == WL_ARCH_GPT2) {
        LIT(w, "{\"architectures\":[\"GPT2LMHeadModel\"],\"model_type\":\"gpt2\",");
        field_int(w, "n_embd", c->dim);
        field_int(w, "n_layer", c->n_layers);
        field_int(w, "n_head", c->n_heads);
        field_int(w, "n_inner", c->hidden_dim);
        field_int(w, "n_positions", c->max_seq_len);
        field_int(w, "n_ctx", c->max_seq_len);
        field_int(w, "vocab_size", c->vocab_size);
        field_f32(w, "layer_norm_epsilon", c->norm_eps);
        LIT(w, "\"activation_function\":\"gelu_new\",\"tie_word_embeddings\":true,");
        /* GPT-2 checkpoints name one token for both. */
        field_token(w, "bos_token_id", c->bos_id >= 0 ? c->bos_id : c->eos_id);
        field_token(w, "eos_token_id", c->eos_id);
    } else {
        if (c->qkv_bias) LIT(w, "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",");
        else LIT(w, "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",");
        field_int(w, "hidden_size", c->dim);
        field_int(w, "intermediate_size", c->hidden_dim);
        field_int(w, "num_hidden_layers", c->n_layers);
        field_int(w, "num_attention_heads", c->n_heads);
        field_int(w, "num_key_value_heads", c->n_kv_heads);
        field_int(w, "head_dim", c->head_dim);
        field_int(w, "vocab_size", c->vocab_size);
        field_int(w, "max_position_embeddings", c->max_seq_len);
        field_f32(w, "rms_norm_eps", c->norm_eps);
        field_f32(w, "rope_theta", c->rope_theta);
        put_key(w, "tie_word_embeddings");
        wl_jw_raw(w, c->tied_embeddings ? "true," : "false,", c->tied_embeddings ? 5 : 6);
        LIT(w, "\"hidden_act\":\"silu\",\"attention_bias\":false,\"mlp_bias\":false,\"rope_scaling\":null,");
        if (c->qkv_bias) LIT(w, "\"use_sliding_window\":false,\"sliding_window\":null,");
        field_token(w, "bos_token_id", c->bos_id);
        field_token(w, "eos_token_id", c->eos_id);
    }
    LIT(w, "\"torch_dtype\":\"float32\"}");
    st = wl_jw_finish(w);
    if (st == WL_OK) {
        *len = w->len;
        if (w->len + 1 > cap)
            st = wl_fail(WL_STATUS_INVALID_ARGUMENT, "config.json needs %zu bytes, the buffer holds %zu", w->len + 1, cap);
        else
            memcpy(buf, w->data, w->len + 1);
    }
    wl_jw_free(w);
    return st;
}
