/* Shared pieces of the trimodal command. Each command is a function
 * cmd_NAME(argc, argv, json): argv[0] is the first word after the command's
 * name; it returns the process exit status (0 ok, 1 failure, 2 usage). */
#ifndef TM_CLI_H
#define TM_CLI_H

#include <stdio.h>

/* Prints "trimodal: <message>" and a pointer to --help on stderr; returns 2. */
int cli_usage(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
/* Writes s as a JSON string literal. */
void cli_json_string(FILE *f, const char *s);

int cmd_info(int argc, char **argv, int json);
int cmd_inspect(int argc, char **argv, int json);
int cmd_preprocess(int argc, char **argv, int json);
int cmd_tokenizer(int argc, char **argv, int json);
int cmd_init(int argc, char **argv, int json);
int cmd_bench(int argc, char **argv, int json);
/* inspect of a model folder (with config.json) or a config file */
int cmd_inspect_model(const char *path, int json);

#endif
