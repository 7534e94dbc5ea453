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
int cmd_data(int argc, char **argv, int json);       /* cmd_data.c: check, build */
int cmd_data_build(int argc, char **argv, int json); /* cmd_data_build.c: build fashion-tri */
int cmd_train(int argc, char **argv, int json);      /* cmd_train.c */
int cmd_eval(int argc, char **argv, int json);       /* cmd_eval.c */
int cmd_embed(int argc, char **argv, int json);      /* cmd_infer.c */
int cmd_classify(int argc, char **argv, int json);   /* cmd_infer.c */
int cmd_caption(int argc, char **argv, int json);    /* cmd_infer.c */
int cmd_search(int argc, char **argv, int json);     /* cmd_search.c */
int cmd_serve(int argc, char **argv, int json);      /* cmd_serve.c */
int cmd_quantize(int argc, char **argv, int json);   /* cmd_quantize.c */
int cmd_prune(int argc, char **argv, int json);      /* cmd_prune.c */
int cmd_encrypt(int argc, char **argv, int json);    /* cmd_crypt.c */
int cmd_decrypt(int argc, char **argv, int json);    /* cmd_crypt.c */
/* inspect of a model folder (with config.json) or a config file */
int cmd_inspect_model(const char *path, int json);

#endif
