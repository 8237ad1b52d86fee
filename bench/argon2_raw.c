/*
 * argon2_raw.c - the raw argon2id rate of this machine, the yardstick for the password
 * grant: THREADS threads call libsodium's crypto_pwhash_str (argon2id, the same call and
 * parameters the server's hash workers use) back to back for SECONDS seconds.
 *
 * usage: argon2_raw THREADS SECONDS MEMORY_KIB ITERATIONS
 * prints one line: "ARGON2 threads=.. hashes=.. seconds=.. rate=.. ms_per_hash=.."
 *
 * rate is the sum over threads of (hashes completed / time until that thread's last
 * completion), so a hash still running at the deadline neither counts nor dilutes.
 * Built and run by bench/run.sh (gcc -O2 -pthread argon2_raw.c -lsodium).
 */
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int stop_flag;
static unsigned long long opslimit;
static size_t memlimit;

struct worker {
    pthread_t tid;
    long hashes;
    double start, last;
    int failed;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    char out[crypto_pwhash_STRBYTES];
    static const char pw[] = "bench-Passw0rd!";
    w->start = w->last = now_s();
    while (!atomic_load(&stop_flag)) {
        if (crypto_pwhash_str(out, pw, sizeof(pw) - 1, opslimit, memlimit) != 0) {
            w->failed = 1;
            break;
        }
        double t = now_s();
        if (atomic_load(&stop_flag))
            break; /* finished after the deadline: not counted */
        w->hashes++;
        w->last = t;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s THREADS SECONDS MEMORY_KIB ITERATIONS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    double seconds = atof(argv[2]);
    memlimit = (size_t)strtoull(argv[3], NULL, 10) * 1024;
    opslimit = strtoull(argv[4], NULL, 10);
    if (threads < 1 || threads > 256 || seconds <= 0 || sodium_init() < 0) {
        fprintf(stderr, "argon2_raw: bad arguments or sodium_init failed\n");
        return 2;
    }
    struct worker *ws = calloc((size_t)threads, sizeof(*ws));
    if (!ws)
        return 1;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ws[i].tid, NULL, run, &ws[i]) != 0) {
            fprintf(stderr, "argon2_raw: pthread_create failed\n");
            return 1;
        }
    struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&d, &d) != 0)
        ;
    atomic_store(&stop_flag, 1);
    long total = 0;
    double rate = 0;
    int failed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(ws[i].tid, NULL);
        total += ws[i].hashes;
        failed |= ws[i].failed;
        if (ws[i].hashes > 0 && ws[i].last > ws[i].start)
            rate += (double)ws[i].hashes / (ws[i].last - ws[i].start);
    }
    if (failed) {
        fprintf(stderr, "argon2_raw: crypto_pwhash_str failed (out of memory?)\n");
        return 1;
    }
    printf("ARGON2 threads=%d hashes=%ld seconds=%.3f rate=%.2f ms_per_hash=%.2f\n", threads, total,
           seconds, rate, rate > 0 ? 1000.0 * threads / rate : 0.0);
    free(ws);
    return 0;
}
