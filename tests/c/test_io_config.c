/* test_io_config.c: config.json parsing (the real tiny-random-llama and tiny-gpt2 configs, Llama / Mistral /
 * Qwen2 / GPT-2 variants, every refused option and malformed field) and llama2.c headers (both real
 * checkpoints, and every header rule on hostile headers). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "wl_io.h"

/* ---- config.json ---- */

static wl_status from_json(const char *text, wl_config *cfg) { return wl_config_from_hf_json(text, strlen(text), cfg); }

/* A small Llama config with `extra` members spliced in (which may override earlier keys only if the JSON
 * allowed duplicates, so callers pass members not in the base). */
static const char *llama_json(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
             "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100%s%s}",
             extra[0] ? "," : "", extra);
    return buf;
}

static const char *gpt2_json(const char *extra) {
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":8,\"n_layer\":2,\"n_head\":2,\"vocab_size\":50%s%s}",
             extra[0] ? "," : "", extra);
    return buf;
}

static void expect_config_fail(const char *text, wl_status want, const char *needle) {
    wl_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    wl_config before = cfg;
    wl_clear_error();
    wl_status got = from_json(text, &cfg);
    CHECK_MSG(got == want && wl_last_error()[0], "%.200s: status %d (want %d): %s", text, (int)got, (int)want,
              wl_last_error());
    if (needle) CHECK_MSG(strstr(wl_last_error(), needle) != NULL, "message \"%s\" lacks \"%s\"", wl_last_error(), needle);
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0); /* untouched on failure */
}

static void test_real_configs(void) {
    size_t len;
    char *text = (char *)wl_test_read_file(wl_shared_path("models/tiny-random-llama/config.json"), &len);
    CHECK_MSG(text != NULL, "missing tiny-random-llama/config.json");
    if (text) {
        wl_config c;
        CHECK_OK(wl_config_from_hf_json(text, len, &c));
        CHECK(c.arch == WL_ARCH_LLAMA && c.dim == 16 && c.hidden_dim == 64 && c.n_layers == 2 && c.n_heads == 4);
        CHECK(c.n_kv_heads == 4 && c.head_dim == 4 && c.vocab_size == 32000 && c.max_seq_len == 2048);
        CHECK(c.tied_embeddings == 0 && c.qkv_bias == 0 && c.rope_layout == WL_ROPE_HALF);
        CHECK(c.rope_theta == 10000.0f && c.norm_eps == 1e-6f && c.bos_id == 0 && c.eos_id == 1);
        /* Truncated anywhere, it is refused cleanly. */
        int bad = 0;
        for (size_t n = 0; n < len; n++) {
            wl_config t;
            wl_status st = wl_config_from_hf_json(text, n, &t);
            if (st == WL_OK && n < len - 2) bad++; /* only trailing whitespace may go */
            if (st != WL_OK && !wl_last_error()[0]) bad++;
        }
        CHECK_MSG(bad == 0, "%d truncations misjudged", bad);
        free(text);
    }
    text = (char *)wl_test_read_file(wl_shared_path("models/tiny-gpt2/config.json"), &len);
    CHECK_MSG(text != NULL, "missing tiny-gpt2/config.json");
    if (text) {
        wl_config c;
        CHECK_OK(wl_config_from_hf_json(text, len, &c));
        CHECK(c.arch == WL_ARCH_GPT2 && c.dim == 2 && c.n_layers == 2 && c.n_heads == 2 && c.n_kv_heads == 2);
        CHECK(c.head_dim == 1 && c.hidden_dim == 8 && c.vocab_size == 50257 && c.max_seq_len == 1024);
        CHECK(c.tied_embeddings == 1 && c.qkv_bias == 0 && c.norm_eps == 1e-5f);
        CHECK(c.bos_id == 50256 && c.eos_id == 50256);
        free(text);
    }
}

/* A config written as config.json reads back identically, with transformers' key names and shortest floats. */
static void check_written(const wl_config *c, const char *const *needles, const char *what) {
    char buf[2048];
    size_t len = 0;
    CHECK_OK(wl_config_to_hf_json(c, buf, sizeof buf, &len));
    CHECK_MSG(len == strlen(buf), "%s: length %zu", what, len);
    wl_config back;
    CHECK_OK(wl_config_from_hf_json(buf, len, &back));
    CHECK_MSG(memcmp(&back, c, sizeof back) == 0, "%s: %s reads back differently", what, buf);
    for (int i = 0; needles[i]; i++) CHECK_MSG(strstr(buf, needles[i]) != NULL, "%s: %s lacks %s", what, buf, needles[i]);
    /* Too small a buffer: refused, with the size it needs. */
    size_t need = 0;
    CHECK_STATUS(wl_config_to_hf_json(c, buf, len, &need), WL_STATUS_INVALID_ARGUMENT);
    CHECK(need == len);
}

static void test_config_writer(void) {
    const char *paths[2] = {"models/tiny-random-llama/config.json", "models/tiny-gpt2/config.json"};
    const char *llama[] = {"\"architectures\":[\"LlamaForCausalLM\"]", "\"rms_norm_eps\":1e-06", "\"rope_theta\":10000",
                           "\"num_key_value_heads\":4", "\"tie_word_embeddings\":false", NULL};
    const char *gpt2[] = {"\"architectures\":[\"GPT2LMHeadModel\"]", "\"layer_norm_epsilon\":1e-05", "\"n_inner\":8",
                          "\"bos_token_id\":50256", NULL};
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *text = (char *)wl_test_read_file(wl_shared_path(paths[i]), &len);
        CHECK_MSG(text != NULL, "missing %s", paths[i]);
        if (!text) continue;
        wl_config c;
        CHECK_OK(wl_config_from_hf_json(text, len, &c));
        check_written(&c, i ? gpt2 : llama, paths[i]);
        free(text);
    }
    /* Qwen2 (q/k/v bias), a tied head, unknown token ids, an odd epsilon and theta. */
    wl_config q = {WL_ARCH_LLAMA, 64, 128, 2, 4, 2, 16, 1000, 512, 1, 1, WL_ROPE_HALF, 1000000.0f, 0.1f, -1, -1};
    const char *qwen[] = {"\"Qwen2ForCausalLM\"", "\"model_type\":\"qwen2\"", "\"rms_norm_eps\":0.1", "\"rope_theta\":1000000",
                          "\"bos_token_id\":null", "\"eos_token_id\":null", "\"tie_word_embeddings\":true", NULL};
    check_written(&q, qwen, "qwen2");
    /* An invalid config is refused, not written. */
    q.n_heads = 3;
    char buf[2048];
    size_t len;
    CHECK(wl_config_to_hf_json(&q, buf, sizeof buf, &len) != WL_OK && wl_last_error()[0]);
}

static void test_llama_variants(void) {
    wl_config c;
    /* Defaults: kv heads = heads, head_dim = hidden / heads, 2048 positions, eps 1e-6, theta 1e4, untied,
     * bos/eos unknown. */
    CHECK_OK(from_json(llama_json(""), &c));
    CHECK(c.n_kv_heads == 4 && c.head_dim == 4 && c.max_seq_len == 2048 && c.norm_eps == 1e-6f);
    CHECK(c.rope_theta == 10000.0f && c.tied_embeddings == 0 && c.bos_id == -1 && c.eos_id == -1);
    /* SmolLM2-like: tied, GQA, explicit fields, eos as a list, nulls meaning "default". */
    CHECK_OK(from_json(llama_json("\"num_key_value_heads\":2,\"tie_word_embeddings\":true,\"rope_theta\":100000.0,"
                                  "\"rms_norm_eps\":1e-05,\"max_position_embeddings\":8192,\"bos_token_id\":1,"
                                  "\"eos_token_id\":[2,3],\"rope_scaling\":null,\"attention_bias\":false,"
                                  "\"mlp_bias\":false,\"hidden_act\":\"silu\",\"head_dim\":null,\"pretraining_tp\":1"),
                        &c));
    CHECK(c.n_kv_heads == 2 && c.tied_embeddings == 1 && c.rope_theta == 100000.0f && c.norm_eps == 1e-5f);
    CHECK(c.max_seq_len == 8192 && c.bos_id == 1 && c.eos_id == 2 && c.head_dim == 4);
    CHECK_OK(from_json(llama_json("\"head_dim\":8,\"eos_token_id\":[]"), &c));
    CHECK(c.head_dim == 8 && c.eos_id == -1);
    /* model_type alone names the family. */
    CHECK_OK(from_json("{\"model_type\":\"llama\",\"hidden_size\":16,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}",
                       &c));
    CHECK(c.arch == WL_ARCH_LLAMA);

    /* Qwen2: q/k/v biases; a configured but unused sliding window is fine. */
    CHECK_OK(from_json("{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":100,"
                       "\"use_sliding_window\":false,\"sliding_window\":4096,\"max_window_layers\":21,"
                       "\"tie_word_embeddings\":true,\"rope_theta\":1000000.0}",
                       &c));
    CHECK(c.arch == WL_ARCH_LLAMA && c.qkv_bias == 1 && c.tied_embeddings == 1 && c.rope_layout == WL_ROPE_HALF);
    expect_config_fail("{\"architectures\":[\"Qwen2ForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100,\"use_sliding_window\":true}",
                       WL_STATUS_UNSUPPORTED, "use_sliding_window");

    /* Mistral only without a sliding window (its default is 4096). */
    const char *mistral = "{\"architectures\":[\"MistralForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                          "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":100%s}";
    char buf[1024];
    snprintf(buf, sizeof buf, mistral, ",\"sliding_window\":null");
    CHECK_OK(from_json(buf, &c));
    CHECK(c.arch == WL_ARCH_LLAMA && c.qkv_bias == 0 && c.n_kv_heads == 2);
    snprintf(buf, sizeof buf, mistral, ",\"sliding_window\":4096");
    expect_config_fail(buf, WL_STATUS_UNSUPPORTED, "sliding_window = 4096");
    snprintf(buf, sizeof buf, mistral, "");
    expect_config_fail(buf, WL_STATUS_UNSUPPORTED, "sliding_window");

    /* Refused options, each named. */
    expect_config_fail(llama_json("\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}"), WL_STATUS_UNSUPPORTED, "linear");
    expect_config_fail(llama_json("\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0}"), WL_STATUS_UNSUPPORTED,
                       "llama3");
    expect_config_fail(llama_json("\"attention_bias\":true"), WL_STATUS_UNSUPPORTED, "o_proj");
    expect_config_fail(llama_json("\"mlp_bias\":true"), WL_STATUS_UNSUPPORTED, "mlp_bias");
    expect_config_fail(llama_json("\"hidden_act\":\"gelu\""), WL_STATUS_UNSUPPORTED, "gelu");
    expect_config_fail(llama_json("\"hidden_act\":7"), WL_STATUS_BAD_FORMAT, "hidden_act");
    expect_config_fail("{\"architectures\":[\"LlamaModel\"]}", WL_STATUS_UNSUPPORTED, "LlamaModel");
    expect_config_fail("{\"model_type\":\"bert\"}", WL_STATUS_UNSUPPORTED, "bert");
    expect_config_fail("{\"hidden_size\":16}", WL_STATUS_BAD_FORMAT, "architectures");
    expect_config_fail("{\"architectures\":[]}", WL_STATUS_BAD_FORMAT, "architectures");
    expect_config_fail("{\"architectures\":\"LlamaForCausalLM\"}", WL_STATUS_BAD_FORMAT, "architectures");
    expect_config_fail("{\"model_type\":3}", WL_STATUS_BAD_FORMAT, "model_type");

    /* Malformed fields. */
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"intermediate_size\":64,\"num_hidden_layers\":2,"
                       "\"num_attention_heads\":4,\"vocab_size\":100}",
                       WL_STATUS_BAD_FORMAT, "hidden_size");
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":\"16\",\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}",
                       WL_STATUS_BAD_FORMAT, "hidden_size");
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16.5,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}",
                       WL_STATUS_BAD_FORMAT, "hidden_size");
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":-16,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}",
                       WL_STATUS_BAD_FORMAT, "hidden_size");
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":1099511627776,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100}",
                       WL_STATUS_BAD_FORMAT, "hidden_size");
    expect_config_fail("{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":16,\"intermediate_size\":64,"
                       "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":0}",
                       WL_STATUS_BAD_FORMAT, "vocab_size");
    expect_config_fail(llama_json("\"rms_norm_eps\":-1e-6"), WL_STATUS_BAD_FORMAT, "rms_norm_eps");
    expect_config_fail(llama_json("\"rms_norm_eps\":\"1e-6\""), WL_STATUS_BAD_FORMAT, "rms_norm_eps");
    expect_config_fail(llama_json("\"rope_theta\":1e40"), WL_STATUS_BAD_FORMAT, "rope_theta");
    expect_config_fail(llama_json("\"tie_word_embeddings\":\"true\""), WL_STATUS_BAD_FORMAT, "tie_word_embeddings");
    expect_config_fail(llama_json("\"tie_word_embeddings\":1"), WL_STATUS_BAD_FORMAT, "tie_word_embeddings");
    expect_config_fail(llama_json("\"eos_token_id\":\"2\""), WL_STATUS_BAD_FORMAT, "eos_token_id");
    expect_config_fail(llama_json("\"bos_token_id\":[\"1\"]"), WL_STATUS_BAD_FORMAT, "bos_token_id");
    expect_config_fail(llama_json("\"bos_token_id\":-5"), WL_STATUS_BAD_FORMAT, "bos_token_id");
    expect_config_fail(llama_json("\"num_key_value_heads\":0"), WL_STATUS_BAD_FORMAT, "num_key_value_heads");
    /* Inconsistent sizes are caught by wl_config_validate. */
    expect_config_fail(llama_json("\"num_key_value_heads\":3"), WL_STATUS_BAD_FORMAT, NULL);
    expect_config_fail(llama_json("\"eos_token_id\":100"), WL_STATUS_BAD_FORMAT, "eos");
    expect_config_fail(llama_json("\"head_dim\":5"), WL_STATUS_BAD_FORMAT, "head_dim");
    /* Not a config at all. */
    expect_config_fail("[1,2]", WL_STATUS_BAD_FORMAT, "object");
    expect_config_fail("{\"hidden_size\":16,}", WL_STATUS_BAD_FORMAT, "JSON");
    expect_config_fail("", WL_STATUS_BAD_FORMAT, "JSON");
    expect_config_fail(llama_json("\"hidden_size\":32"), WL_STATUS_BAD_FORMAT, "duplicate");
    CHECK_STATUS(wl_config_from_hf_json("{}", 2, NULL), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_config_from_hf_json(NULL, 2, &c), WL_STATUS_INVALID_ARGUMENT);
}

static void test_gpt2_variants(void) {
    wl_config c;
    CHECK_OK(from_json(gpt2_json(""), &c));
    CHECK(c.arch == WL_ARCH_GPT2 && c.hidden_dim == 32 && c.max_seq_len == 1024 && c.norm_eps == 1e-5f);
    CHECK(c.head_dim == 4 && c.tied_embeddings == 1 && c.bos_id == -1);
    CHECK_OK(from_json(gpt2_json("\"n_inner\":20,\"n_positions\":64,\"activation_function\":\"gelu_pytorch_tanh\","
                                 "\"layer_norm_epsilon\":1e-6,\"scale_attn_weights\":true,\"eos_token_id\":49"),
                       &c));
    CHECK(c.hidden_dim == 20 && c.max_seq_len == 64 && c.norm_eps == 1e-6f && c.eos_id == 49);
    CHECK_OK(from_json(gpt2_json("\"n_inner\":null"), &c));
    CHECK(c.hidden_dim == 32);
    expect_config_fail(gpt2_json("\"activation_function\":\"relu\""), WL_STATUS_UNSUPPORTED, "relu");
    expect_config_fail(gpt2_json("\"activation_function\":\"gelu\""), WL_STATUS_UNSUPPORTED, "gelu");
    expect_config_fail(gpt2_json("\"scale_attn_by_inverse_layer_idx\":true"), WL_STATUS_UNSUPPORTED,
                       "scale_attn_by_inverse_layer_idx");
    expect_config_fail(gpt2_json("\"reorder_and_upcast_attn\":true"), WL_STATUS_UNSUPPORTED, "reorder_and_upcast_attn");
    expect_config_fail(gpt2_json("\"scale_attn_weights\":false"), WL_STATUS_UNSUPPORTED, "scale_attn_weights");
    expect_config_fail(gpt2_json("\"tie_word_embeddings\":false"), WL_STATUS_UNSUPPORTED, "untied");
    expect_config_fail(gpt2_json("\"n_inner\":0"), WL_STATUS_BAD_FORMAT, "n_inner");
    expect_config_fail(gpt2_json("\"n_positions\":2.5"), WL_STATUS_BAD_FORMAT, "n_positions");
    expect_config_fail(gpt2_json("\"layer_norm_epsilon\":0"), WL_STATUS_BAD_FORMAT, "layer_norm_epsilon");
    expect_config_fail("{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":8,\"n_layer\":2,\"n_head\":3,\"vocab_size\":50}",
                       WL_STATUS_BAD_FORMAT, "n_head");
    expect_config_fail("{\"architectures\":[\"GPT2LMHeadModel\"],\"n_embd\":1000000000,\"n_layer\":2,\"n_head\":2,"
                       "\"vocab_size\":50}",
                       WL_STATUS_BAD_FORMAT, NULL);
    expect_config_fail("{\"model_type\":\"gpt2\",\"n_layer\":2,\"n_head\":2,\"vocab_size\":50}", WL_STATUS_BAD_FORMAT,
                       "n_embd");
}

/* ---- llama2.c headers ---- */

static uint8_t *l2c_header(const int32_t h[7], size_t len) {
    uint8_t *buf = calloc(len > 28 ? len : 28, 1);
    for (int i = 0; i < 7; i++)
        for (int b = 0; b < 4; b++) buf[4 * i + b] = (uint8_t)((uint32_t)h[i] >> (8 * b));
    return buf;
}

/* Bytes a llama2.c checkpoint with these header values has (the test's own count, from DATA.md). */
static size_t l2c_size(const int32_t h[7]) {
    size_t C = (size_t)h[0], I = (size_t)h[1], L = (size_t)h[2], H = (size_t)h[3], KV = (size_t)h[4];
    size_t V = (size_t)(h[5] < 0 ? -h[5] : h[5]), T = (size_t)h[6], hs = C / H, kvd = hs * KV;
    size_t floats = V * C + L * C + L * C * C + 2 * L * kvd * C + L * C * C + L * C + 3 * L * I * C + C + 2 * (T * hs / 2);
    if (h[5] < 0) floats += V * C;
    return 28 + 4 * floats;
}

static void expect_l2c_fail(const int32_t h[7], size_t len, const char *needle, const char *why) {
    uint8_t *buf = l2c_header(h, len);
    wl_config c;
    wl_clear_error();
    wl_status st = wl_config_from_llama2c(buf, len, &c);
    CHECK_MSG(st == WL_STATUS_BAD_FORMAT && wl_last_error()[0], "%s: status %d: %s", why, (int)st, wl_last_error());
    if (needle) CHECK_MSG(strstr(wl_last_error(), needle) != NULL, "%s: message \"%s\" lacks \"%s\"", why, wl_last_error(), needle);
    wl_model *m = (wl_model *)1;
    CHECK(wl_model_load_llama2c(buf, len, &m) == WL_STATUS_BAD_FORMAT && m == NULL);
    free(buf);
}

static void test_llama2c_headers(void) {
    static const struct {
        const char *path;
        int L, H, T;
    } real[] = {
        {"models/stories260K/stories260K.bin", 5, 8, 512},
        {"models/aidreams260K/aidreams260K.bin", 4, 4, 128},
    };
    for (int r = 0; r < 2; r++) {
        size_t len;
        uint8_t *buf = wl_test_read_file(wl_shared_path(real[r].path), &len);
        CHECK_MSG(buf != NULL, "missing %s", real[r].path);
        if (!buf) continue;
        wl_config c;
        CHECK_OK(wl_config_from_llama2c(buf, len, &c));
        CHECK(c.arch == WL_ARCH_LLAMA && c.dim == 64 && c.hidden_dim == 172 && c.n_layers == real[r].L);
        CHECK(c.n_heads == real[r].H && c.n_kv_heads == 4 && c.head_dim == 64 / real[r].H && c.vocab_size == 512);
        CHECK(c.max_seq_len == real[r].T && c.tied_embeddings == 1 && c.qkv_bias == 0);
        CHECK(c.rope_layout == WL_ROPE_INTERLEAVED && c.rope_theta == 10000.0f && c.norm_eps == 1e-5f);
        CHECK(c.bos_id == 1 && c.eos_id == 2);
        CHECK(wl_config_n_params(&c) == (r == 0 ? 260032u : (len - 28) / 4 - 2 * 128 * 8));
        /* The implied size must match exactly. */
        CHECK_STATUS(wl_config_from_llama2c(buf, len - 1, &c), WL_STATUS_BAD_FORMAT);
        CHECK_STATUS(wl_config_from_llama2c(buf, len - 4, &c), WL_STATUS_BAD_FORMAT);
        uint8_t *longer = calloc(len + 4, 1);
        memcpy(longer, buf, len);
        CHECK_STATUS(wl_config_from_llama2c(longer, len + 4, &c), WL_STATUS_BAD_FORMAT);
        /* A negative vocab announces an unshared classifier the file does not have. */
        longer[20] = 0x00, longer[21] = 0xfe, longer[22] = 0xff, longer[23] = 0xff; /* -512 */
        CHECK_STATUS(wl_config_from_llama2c(longer, len, &c), WL_STATUS_BAD_FORMAT);
        free(longer);
        free(buf);
    }

    /* A small synthetic header with the right size passes; then one rule broken at a time. */
    int32_t ok[7] = {8, 12, 2, 2, 1, 16, 4};
    size_t len = l2c_size(ok);
    uint8_t *buf = l2c_header(ok, len);
    wl_config c;
    CHECK_OK(wl_config_from_llama2c(buf, len, &c));
    CHECK(c.n_kv_heads == 1 && c.head_dim == 4 && c.tied_embeddings == 1);
    free(buf);
    int32_t unshared[7] = {8, 12, 2, 2, 1, -16, 4};
    len = l2c_size(unshared);
    buf = l2c_header(unshared, len);
    CHECK_OK(wl_config_from_llama2c(buf, len, &c));
    CHECK(c.vocab_size == 16 && c.tied_embeddings == 0);
    free(buf);

    static const char *const field[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    for (int f = 0; f < 7; f++) {
        int32_t h[7];
        memcpy(h, ok, sizeof h);
        h[f] = 0;
        expect_l2c_fail(h, 4096, field[f], "zero field");
        if (f != 5) {
            h[f] = -3;
            expect_l2c_fail(h, 4096, field[f], "negative field");
        }
    }
    int32_t h[7];
    memcpy(h, ok, sizeof h);
    h[5] = INT32_MIN;
    expect_l2c_fail(h, 4096, "vocab_size", "INT32_MIN vocab");
    memcpy(h, ok, sizeof h);
    h[3] = 3;
    expect_l2c_fail(h, 4096, "n_heads", "heads not dividing dim");
    memcpy(h, ok, sizeof h);
    h[4] = 2, h[3] = 1, h[0] = 8;
    expect_l2c_fail(h, 4096, "n_kv_heads", "more kv heads than heads");
    memcpy(h, ok, sizeof h);
    h[0] = 12, h[3] = 4, h[4] = 3;
    h[3] = 6, h[4] = 4;
    expect_l2c_fail(h, 4096, "n_kv_heads", "kv heads not dividing heads");
    /* Absurd sizes: the implied byte count overflows 64 bits, or is simply not this file. */
    int32_t huge[7] = {INT32_MAX - 1, INT32_MAX, INT32_MAX, 2, 1, INT32_MAX, INT32_MAX};
    expect_l2c_fail(huge, 4096, "2^64", "64-bit overflow");
    int32_t big[7] = {1 << 16, 1 << 20, 1024, 1024, 1024, 1 << 22, 1 << 20};
    expect_l2c_fail(big, 4096, "implies", "huge but representable");
    expect_l2c_fail(ok, 27, "too short", "short header");
    expect_l2c_fail(ok, 0, "too short", "empty buffer");
    /* Passes the size check but not the model limits. */
    int32_t odd[7] = {6, 12, 1, 2, 1, 16, 4}; /* head_dim 3: RoPE needs even */
    len = l2c_size(odd);
    buf = l2c_header(odd, len);
    CHECK_STATUS(wl_config_from_llama2c(buf, len, &c), WL_STATUS_BAD_FORMAT);
    CHECK(strstr(wl_last_error(), "head_dim") != NULL);
    free(buf);
    CHECK_STATUS(wl_config_from_llama2c(NULL, 28, &c), WL_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(wl_config_from_llama2c(NULL, 0, NULL), WL_STATUS_INVALID_ARGUMENT);
}

int main(void) {
    test_real_configs();
    test_config_writer();
    test_llama_variants();
    test_gpt2_variants();
    test_llama2c_headers();
    return wl_test_summary("test_io_config");
}
