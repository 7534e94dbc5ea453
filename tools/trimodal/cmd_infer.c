/* Placeholder until these commands are written. */
#include "cli.h"
int cmd_embed(int argc, char **argv, int json) { (void)argc; (void)argv; (void)json; return cli_usage("this command is not built yet"); }
int cmd_classify(int argc, char **argv, int json) { (void)argc; (void)argv; (void)json; return cli_usage("this command is not built yet"); }
int cmd_caption(int argc, char **argv, int json) { (void)argc; (void)argv; (void)json; return cli_usage("this command is not built yet"); }
