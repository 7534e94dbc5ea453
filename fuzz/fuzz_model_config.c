/* libFuzzer harness for the model config reader (src/model/config.c).
 * Whatever parses must write canonical JSON that parses back to the same
 * canonical JSON; what fails must say why. A config small enough to build
 * cheaply is also built into a model (graph, shapes) and freed. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model/model_internal.h"
#include "trimodal/model.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Building allocates the weights, so only small configs are built: a
 * fuzzer asking for a billion parameters would just hit the RSS limit. */
static int small(const model_cfg *c)
{
    int64_t layers = c->fusion_layers + c->caption_layers;
    if (c->dim > 64 || c->mlp_dim > 256 || c->num_classes > 1000 || c->embed_dim > 256 ||
        c->caption_vocab > 1000 || c->caption_tokens > 64 || c->fusion_hidden > 256 ||
        c->bottleneck > 64)
        return 0;
    for (int i = 0; i < c->n_enc; i++) {
        const enc_cfg *e = &c->enc[i];
        layers += e->layers;
        if (e->vocab > 1000 || e->max_tokens > 64 || e->tokens > 256 ||
            e->channels * e->image_h * e->image_w > 4096 || e->n_mels * e->n_frames > 8192)
            return 0;
        for (int s = 0; s < e->n_stages; s++)
            if (e->stages[s].channels > 64 || e->stages[s].blocks > 2) return 0;
    }
    return layers <= 6;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    model_cfg c;
    tm_status st = tm_model_cfg_parse(&c, (const char *)data, size, "fuzz.json");
    if (st != TM_OK) {
        REQUIRE(tm_last_error()[0]);
        return 0;
    }
    char *json = tm_model_cfg_to_json(&c);
    REQUIRE(json);
    model_cfg back;
    REQUIRE(tm_model_cfg_parse(&back, json, strlen(json), "canonical") == TM_OK);
    char *json2 = tm_model_cfg_to_json(&back);
    REQUIRE(json2 && !strcmp(json, json2));
    tm_free(json2);
    tm_free(json);
    if (small(&c)) {
        tm_model *m = NULL;
        st = tm_model_new_from_json(&m, (const char *)data, size, "fuzz.json");
        REQUIRE((st == TM_OK) == (m != NULL));
        if (st) REQUIRE(tm_last_error()[0]);
        tm_model_free(m);
    }
    return 0;
}
