/* libFuzzer harness for the preprocess config reader
 * (src/data/preprocess_config.c). Whatever parses must write JSON that
 * parses back to the same JSON; what fails must say why and leave the
 * output untouched. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trimodal/data.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_preprocess_config c, before;
    memset(&c, 0x5A, sizeof c);
    before = c;
    tm_status st = tm_preprocess_config_parse(&c, (const char *)data, size);
    if (st != TM_OK) {
        REQUIRE(tm_last_error()[0]);
        REQUIRE(!memcmp(&c, &before, sizeof c));
        return 0;
    }
    char *json = NULL;
    REQUIRE(tm_preprocess_config_to_json(&c, &json) == TM_OK && json);
    tm_preprocess_config back;
    REQUIRE(tm_preprocess_config_parse(&back, json, strlen(json)) == TM_OK);
    char *json2 = NULL;
    REQUIRE(tm_preprocess_config_to_json(&back, &json2) == TM_OK);
    REQUIRE(!strcmp(json, json2));
    tm_free(json2);
    tm_free(json);
    return 0;
}
