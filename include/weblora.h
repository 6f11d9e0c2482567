/* weblora.h: the weblora C core. One header per concern:
 *   wl_status.h  status codes and error messages
 *   wl_model.h   model config, weights, forward / backward / decode
 *   wl_lora.h    LoRA adapters: create, init, attach, train
 *   wl_optim.h   AdamW and SGD over flat buffers
 *   wl_io.h      safetensors and llama2.c parsers, config.json read and write, loading from shards, dtypes
 *   wl_svd.h     truncated SVD and the adapter tools built on it
 */
#ifndef WEBLORA_H
#define WEBLORA_H

#include "wl_status.h"
#include "wl_model.h"
#include "wl_lora.h"
#include "wl_optim.h"
#include "wl_io.h"
#include "wl_svd.h"

#endif
