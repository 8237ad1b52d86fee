/*
 * fuzz_predicate.c - the predicate language's compiler and evaluator under a fuzzer.
 *
 * Input: predicate text, then optionally a NUL byte and a JSON object with any of the keys
 * "identity", "claims", "resource", "old", "new", "request" (the inputs) and "docs" (an
 * object "collection/id" -> document that the fetch callback serves; lookups use
 * "collection/index/term"). Without the NUL, fixed inputs are used. Every compiled predicate
 * is evaluated twice (the second time with a shared, already filled cache); neither may
 * crash, leak, or answer anything but TS_OK, TS_E_INVALID, TS_E_TOO_BIG or TS_E_UNAVAILABLE.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/predicate/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "authz/authz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char fixed[] =
    "{\"identity\":{\"id\":\"u1\",\"teams\":[\"t1\",\"t2\"],\"email\":\"A@x.io\"},"
    "\"claims\":{\"aal\":\"aal2\",\"exp\":100,\"roles\":{\"admin\":true}},"
    "\"resource\":{\"id\":\"d1\",\"data\":{\"owner\":\"u1\",\"n\":1.5,\"tags\":[1,\"a\",null]}},"
    "\"old\":{\"data\":{\"owner\":\"u1\"}},\"new\":{\"data\":{\"owner\":\"u2\"}},"
    "\"request\":{\"method\":\"GET\",\"headers\":{\"x-tenant\":\"acme\"}},"
    "\"docs\":{\"teams/t1\":{\"data\":{\"members\":[\"u1\"]}},\"users/u1/email/a\":{}}}";

static enum ts_rc fetch(void *cls, enum ts_pred_fetch kind, const char *coll, const char *id,
                        const char *term, json_t **out)
{
    const json_t *docs = json_object_get(cls, "docs");
    char key[512];
    if (kind == TS_PRED_FETCH_LOOKUP)
        snprintf(key, sizeof key, "%s/%s/%s", coll, id, term ? term : "");
    else
        snprintf(key, sizeof key, "%s/%s", coll, id);
    if (strcmp(coll, "fail") == 0)
        return TS_E_UNAVAILABLE;
    json_t *d = json_object_get(docs, key);
    *out = d ? json_incref(d) : NULL;
    return TS_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *text = malloc(tlen + 1);
    if (!text)
        return 0;
    memcpy(text, data, tlen);
    text[tlen] = '\0';

    json_t *env = NULL;
    if (nul)
        env = json_loadb((const char *)nul + 1, size - tlen - 1, 0, NULL);
    if (!json_is_object(env)) {
        json_decref(env);
        env = json_loads(fixed, 0, NULL);
    }

    struct ts_pred *p = NULL;
    struct ts_pred_error err;
    struct ts_pred_limits lim = {.max_fetches = 3};
    if (ts_pred_compile(text, &lim, &p, &err) == TS_OK) {
        struct ts_arena arena;
        struct ts_pred_cache cache;
        ts_arena_init(&arena, 1024);
        ts_pred_cache_init(&cache);
        struct ts_pred_input in = {
            .identity = json_object_get(env, "identity"),
            .claims = json_object_get(env, "claims"),
            .resource = json_object_get(env, "resource"),
            .old_doc = json_object_get(env, "old"),
            .new_doc = json_object_get(env, "new"),
            .request = json_object_get(env, "request"),
            .now_s = 1700000000,
            .fetch = fetch,
            .fetch_cls = env,
            .cache = &cache,
        };
        for (int round = 0; round < 2; round++) {
            bool r = false;
            struct ts_pred_trace tr;
            enum ts_rc rc = ts_pred_eval(p, &in, &arena, &r, &tr);
            if (rc != TS_OK && rc != TS_E_INVALID && rc != TS_E_TOO_BIG && rc != TS_E_UNAVAILABLE)
                abort();
            if (rc != tr.rc || cache.fetches > 3)
                abort();
        }
        ts_arena_free(&arena);
        ts_pred_free(p);
    } else if (err.line == 0 || err.column == 0 || err.message[0] == '\0') {
        abort(); /* every refusal says where and why */
    }
    json_decref(env);
    free(text);
    return 0;
}
