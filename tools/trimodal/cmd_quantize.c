/* trimodal quantize: placeholder until the serving work lands. */
#include "cli.h"

int cmd_quantize(int argc, char **argv, int json)
{
    (void)argc; (void)argv; (void)json;
    return cli_usage("quantize is not built yet");
}
