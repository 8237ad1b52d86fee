/*
 * authz_eval.c - evaluations per second of compiled predicates (issue 6's target: at least
 * 1,000,000 per second per core) and the heap allocations made while evaluating (target 0).
 *
 * One thread evaluates each predicate back to back for SECONDS seconds over small JSON
 * inputs, resetting the arena every 1024 evaluations as a request would at its end. malloc,
 * calloc and realloc calls from the linked objects are counted with ld's --wrap (jansson's
 * own calls are not wrapped, and evaluation calls none that allocate).
 *
 * usage: authz_eval [SECONDS]   (default 2)
 * prints one line per predicate: "AUTHZ evals=.. seconds=.. rate=.. ns_per_eval=.. mallocs=.."
 *
 * Build: cmake --build BUILD --target bench_authz, or by hand from the repository root:
 *   gcc -O2 -std=c17 -D_GNU_SOURCE -DTS_BENCH_WRAP -Isrc bench/authz_eval.c \
 *       src/authz/authz_compile.c src/authz/authz_eval.c src/core/rc.c src/core/mem.c \
 *       src/core/util.c src/core/log.c src/core/config.c \
 *       -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc -ljansson -lm -pthread -o authz_eval
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <jansson.h>

#include "authz/authz.h"

static unsigned long n_alloc;
#ifdef TS_BENCH_WRAP
void *__real_malloc(size_t n);
void *__real_calloc(size_t c, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t c, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n)
{
    n_alloc++;
    return __real_malloc(n);
}
void *__wrap_calloc(size_t c, size_t n)
{
    n_alloc++;
    return __real_calloc(c, n);
}
void *__wrap_realloc(void *p, size_t n)
{
    n_alloc++;
    return __real_realloc(p, n);
}
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *parse(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    if (!j) {
        fprintf(stderr, "bad JSON: %s\n", s);
        exit(1);
    }
    return j;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 2.0;
    static const char *const preds[] = {
        "resource.data.owner == identity.id && new.data.owner == old.data.owner",
        "resource.data.owner == identity.id && claims.aal == \"aal2\"",
        "identity.id in resource.data.editors || startsWith(request.path, \"/public/\")",
    };
    json_t *identity = parse("{\"id\":\"8c7e0b8e-6a55-4d0e-9a8f-0a3f2c1d4e5f\",\"email\":"
                             "\"ada@example.com\",\"role\":\"authenticated\"}");
    json_t *claims = parse("{\"sub\":\"8c7e0b8e-6a55-4d0e-9a8f-0a3f2c1d4e5f\",\"aal\":\"aal2\"}");
    json_t *doc = parse("{\"id\":\"d1\",\"data\":{\"owner\":\"8c7e0b8e-6a55-4d0e-9a8f-"
                        "0a3f2c1d4e5f\",\"title\":\"x\",\"editors\":[\"a\",\"b\","
                        "\"8c7e0b8e-6a55-4d0e-9a8f-0a3f2c1d4e5f\"]}}");
    json_t *request = parse("{\"method\":\"PUT\",\"path\":\"/v1/docs/d1\"}");
    struct ts_pred_input in = {.identity = identity,
                               .claims = claims,
                               .resource = doc,
                               .old_doc = doc,
                               .new_doc = doc,
                               .request = request,
                               .now_s = 1700000000};
    struct ts_arena arena;
    ts_arena_init(&arena, 4096);
    for (size_t k = 0; k < sizeof preds / sizeof preds[0]; k++) {
        struct ts_pred *p;
        struct ts_pred_error err;
        if (ts_pred_compile(preds[k], NULL, &p, &err) != TS_OK) {
            fprintf(stderr, "compile: %u:%u %s\n", err.line, err.column, err.message);
            return 1;
        }
        unsigned long evals = 0, allowed = 0, before = n_alloc;
        double t0 = now_s(), t;
        do {
            for (int i = 0; i < 1024; i++) {
                bool r = false;
                if (ts_pred_eval(p, &in, &arena, &r, NULL) != TS_OK)
                    return 1;
                allowed += r;
            }
            evals += 1024;
            ts_arena_reset(&arena);
        } while ((t = now_s() - t0) < seconds);
        printf("AUTHZ pred=%zu evals=%lu seconds=%.2f rate=%.0f ns_per_eval=%.1f mallocs=%lu "
               "allowed=%lu\n",
               k, evals, t, (double)evals / t, t * 1e9 / (double)evals, n_alloc - before, allowed);
        ts_pred_free(p);
    }
    ts_arena_free(&arena);
    json_decref(identity);
    json_decref(claims);
    json_decref(doc);
    json_decref(request);
    return 0;
}
