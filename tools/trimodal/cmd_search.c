/* Placeholder until this command is written. */
#include "cli.h"
int cmd_search(int argc, char **argv, int json) { (void)argc; (void)argv; (void)json; return cli_usage("this command is not built yet"); }
