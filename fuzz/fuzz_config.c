/*
 * libFuzzer target for the config loader: JSON text in, a validated config
 * or one error line out. Invariants: an error is one line that names where
 * it came from; a config that loads prints as JSON that loads again to an
 * equal config (the master hands workers exactly that text).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "modules.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The handlers and their keys, as main registers them. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    if (modules_register() < 0)
        __builtin_trap();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    char err[512];
    struct cfg c, again;
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&c, 0, sizeof(c));
    if (cfg_from_json(text, &c, err, sizeof(err)) < 0) {
        if (strchr(err, '\n') || strncmp(err, "<effective>", 11) != 0)
            __builtin_trap();
        cfg_free(&c);
        free(text);
        return 0;
    }
    char *json = cfg_to_json(&c);
    if (!json)
        __builtin_trap();
    memset(&again, 0, sizeof(again));
    if (cfg_from_json(json, &again, err, sizeof(err)) < 0 || !cfg_equal(&c, &again))
        __builtin_trap();
    free(json);
    cfg_free(&again);
    cfg_free(&c);
    free(text);
    return 0;
}
