// abi.js: the C/JS boundary, written by tools/abi.js (npm run build) from the description the C core gives of
// itself (src/wasm/abi.c, from the headers in include/). Do not edit: change the headers and rebuild. web/core/core.js
// refuses a core whose description differs, and tests/js/abi.test.js checks it against every build of the core.
//   status        status names by code (wl_status); a failing call's CoreError carries the name as its code
//   structs       layouts of the structs JavaScript reads and writes: size and [field, byte offset, type, count]
//                 (types: i32, u32 (size_t), f32, f64, i64, ptr, str: a pointer to a NUL-terminated string)
//   architectures where each architecture's blocks sit and its LoRA module slots: [path, has_bias, conv1d]
//   limits        the parsers' limits (safetensors header size and rank) and the model-level module coordinates

export const ABI = Object.freeze(/** @type {const} */ ({
  status: ["OK", "INVALID_ARGUMENT", "BAD_FORMAT", "UNSUPPORTED", "SHAPE_MISMATCH", "OUT_OF_MEMORY", "NOT_FOUND", "NUMERIC", "BAD_STATE"],
  dtype: {
    F32: 0,
    F16: 1,
    BF16: 2,
    F64: 3,
    I32: 4,
    I64: 5,
    U8: 6,
    I8: 7,
    BOOL: 8,
    I16: 9,
    U16: 10,
    U32: 11,
    U64: 12,
    F8_E4M3: 13,
    F8_E5M2: 14,
  },
  dtypeSize: [4, 2, 2, 8, 4, 8, 1, 1, 1, 2, 2, 4, 8, 1, 1],
  arch: {
    LLAMA: 1,
    GPT2: 2,
  },
  ropeLayout: {
    HALF: 0,
    INTERLEAVED: 1,
  },
  storage: {
    f32: 0,
    q8: 1,
    q4: 2,
  },
  forwardFlags: {
    TRAIN: 1,
    LAST_LOGITS: 2,
  },
  reserveFlags: {
    TRAIN: 1,
    LAST_LOGITS: 2,
    RECOMPUTE: 4,
  },
  loraInit: {
    default: 0,
    gaussian: 1,
    zero: 2,
  },
  combine: {
    linear: 0,
    cat: 1,
    svd: 2,
  },
  svdMethod: {
    auto: 0,
    exact: 1,
    randomized: 2,
  },
  structs: {
    wl_config: {
      size: 64,
      fields: [
        ["arch", 0, "i32", 1],
        ["dim", 4, "i32", 1],
        ["hidden_dim", 8, "i32", 1],
        ["n_layers", 12, "i32", 1],
        ["n_heads", 16, "i32", 1],
        ["n_kv_heads", 20, "i32", 1],
        ["head_dim", 24, "i32", 1],
        ["vocab_size", 28, "i32", 1],
        ["max_seq_len", 32, "i32", 1],
        ["tied_embeddings", 36, "i32", 1],
        ["qkv_bias", 40, "i32", 1],
        ["rope_layout", 44, "i32", 1],
        ["rope_theta", 48, "f32", 1],
        ["norm_eps", 52, "f32", 1],
        ["bos_id", 56, "i32", 1],
        ["eos_id", 60, "i32", 1],
      ],
    },
    wl_tensor_info: {
      size: 56,
      fields: [
        ["name", 0, "str", 1],
        ["data", 4, "ptr", 1],
        ["grad", 8, "ptr", 1],
        ["ndim", 12, "i32", 1],
        ["shape", 16, "i64", 2],
        ["transposed", 32, "i32", 1],
        ["numel", 36, "u32", 1],
        ["layer", 40, "i32", 1],
        ["decay", 44, "i32", 1],
        ["storage", 48, "i32", 1],
      ],
    },
    wl_module_info: {
      size: 20,
      fields: [
        ["name", 0, "str", 1],
        ["in_features", 4, "i32", 1],
        ["out_features", 8, "i32", 1],
        ["has_bias", 12, "i32", 1],
        ["conv1d", 16, "i32", 1],
      ],
    },
    wl_lora_module: {
      size: 60,
      fields: [
        ["layer", 0, "i32", 1],
        ["slot", 4, "i32", 1],
        ["rank", 8, "i32", 1],
        ["in_features", 12, "i32", 1],
        ["out_features", 16, "i32", 1],
        ["scale", 20, "f32", 1],
        ["alpha", 24, "f32", 1],
        ["A", 28, "ptr", 1],
        ["B", 32, "ptr", 1],
        ["dA", 36, "ptr", 1],
        ["dB", 40, "ptr", 1],
        ["magnitude", 44, "ptr", 1],
        ["dmagnitude", 48, "ptr", 1],
        ["row_blocks", 52, "i32", 1],
        ["block_mask", 56, "i32", 1],
      ],
    },
    wl_llama2c_part: {
      size: 24,
      fields: [
        ["tensor", 0, "i32", 1],
        ["offset", 8, "f64", 1],
        ["numel", 16, "f64", 1],
      ],
    },
  },
  architectures: {
    llama: {
      blocks: "model.layers",
      slots: [
        ["self_attn.q_proj", 0, 0],
        ["self_attn.k_proj", 0, 0],
        ["self_attn.v_proj", 0, 0],
        ["self_attn.o_proj", 0, 0],
        ["mlp.gate_proj", 0, 0],
        ["mlp.up_proj", 0, 0],
        ["mlp.down_proj", 0, 0],
      ],
    },
    gpt2: {
      blocks: "transformer.h",
      slots: [
        ["attn.c_attn", 1, 1],
        ["attn.c_proj", 1, 1],
        ["mlp.c_fc", 1, 1],
        ["mlp.c_proj", 1, 1],
      ],
    },
  },
  limits: {
    safetensorsMaxHeader: 100000000,
    safetensorsMaxDims: 8,
    maxSlots: 7,
    loraModelLayer: -1,
    loraEmbedSlot: 0,
    loraHeadSlot: 1,
  },
}));
