/* libFuzzer harness for the training run config reader
 * (src/train/run_config.c). Whatever parses must write canonical JSON that
 * parses back to the same canonical JSON; what fails must say why and
 * leave *out NULL. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trimodal/train.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_run_config *c = NULL;
    tm_status st = tm_run_config_parse(&c, (const char *)data, size, "fuzz.json");
    if (st != TM_OK) {
        REQUIRE(c == NULL && tm_last_error()[0]);
        return 0;
    }
    char *json = tm_run_config_to_json(c);
    REQUIRE(json);
    tm_run_config *back = NULL;
    REQUIRE(tm_run_config_parse(&back, json, strlen(json), "canonical") == TM_OK);
    char *json2 = tm_run_config_to_json(back);
    REQUIRE(json2 && !strcmp(json, json2));
    tm_free(json2);
    tm_free(json);
    tm_run_config_free(back);
    tm_run_config_free(c);
    return 0;
}
