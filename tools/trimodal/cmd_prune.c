/* trimodal prune: placeholder until the serving work lands. */
#include "cli.h"

int cmd_prune(int argc, char **argv, int json)
{
    (void)argc; (void)argv; (void)json;
    return cli_usage("prune is not built yet");
}
