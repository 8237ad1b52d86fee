/*
 * core.h - the core module: result codes, memory, logging, configuration and small
 * utilities. Depends on libc and POSIX only; every other module may include it.
 * See docs/ARCHITECTURE.md.
 */
#ifndef TS_CORE_H
#define TS_CORE_H

#include "config.h"
#include "log.h"
#include "mem.h"
#include "rc.h"
#include "util.h"

#endif
