/* trimodal encrypt / decrypt: placeholders until the encryption work lands. */
#include "cli.h"

int cmd_encrypt(int argc, char **argv, int json)
{
    (void)argc; (void)argv; (void)json;
    return cli_usage("encrypt is not built yet");
}

int cmd_decrypt(int argc, char **argv, int json)
{
    (void)argc; (void)argv; (void)json;
    return cli_usage("decrypt is not built yet");
}
